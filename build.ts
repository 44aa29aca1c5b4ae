/**
 * build.ts: compiles raftkv's standalone executables (`bun run build.ts`).
 *
 * Why the rocksdb plugin exists: the `rocksdb` package locates its native addon at run
 * time through node-gyp-build (`node_modules/rocksdb/binding.js` is
 * `require('node-gyp-build')(__dirname)`), a dynamic lookup the bundler cannot follow.
 * A plain `--compile` therefore does not embed the addon: the executable silently loads
 * it from this machine's absolute node_modules path and breaks once copied elsewhere.
 * The plugin replaces binding.js with a static `require()` of the prebuilt linux-x64
 * glibc `.node` file, so Bun embeds the addon in the executable (and unpacks it into
 * $TMPDIR when it runs). The client never imports rocksdb, so it is unaffected.
 *
 * `bytecode: true` needs `format: "esm"` because the sources use top-level await.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { BunPlugin } from "bun";

/** Executables to build: output name -> entry file. */
export const ENTRIES: Record<string, string> = {
  svr: "src/cli/svr.ts",
  clt: "src/cli/clt.ts",
};
export const OUTDIR = "build/dev";

const TARGET = "bun-linux-x64";
const ROOT = import.meta.dir;
const ROCKSDB_ADDON = join(ROOT, "node_modules/rocksdb/prebuilds/linux-x64/node.napi.glibc.node");

/** Replaces rocksdb's node-gyp-build lookup with a static require of the prebuilt addon. */
export const embedRocksdbAddon: BunPlugin = {
  name: "embed-rocksdb-addon",
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/]rocksdb[\\/]binding\.js$/ }, () => {
      if (!existsSync(ROCKSDB_ADDON)) {
        throw new Error(`rocksdb prebuilt addon not found: ${ROCKSDB_ADDON}`);
      }
      return {
        contents: `module.exports = require(${JSON.stringify(ROCKSDB_ADDON)});\n`,
        loader: "js",
      };
    });
  },
};

/** Compiles each entry into `outdir/<name>`; throws if any build fails. Returns the paths. */
export async function buildExecutables(
  entries: Record<string, string>,
  outdir: string,
): Promise<string[]> {
  const outputs: string[] = [];
  for (const [name, entry] of Object.entries(entries)) {
    const outfile = resolve(outdir, name);
    if (!existsSync(entry)) throw new Error(`entry file for ${name} not found: ${resolve(entry)}`);
    const result = await Bun.build({
      entrypoints: [resolve(entry)],
      compile: {
        target: TARGET,
        outfile,
        // The executables must not pick up stray config from whatever cwd they run in.
        autoloadDotenv: false,
        autoloadBunfig: false,
      },
      minify: true,
      bytecode: true,
      format: "esm",
      sourcemap: "none",
      plugins: [embedRocksdbAddon],
      throw: false,
    });
    if (!result.success) {
      const details = result.logs.map((log) => `  ${String(log)}`).join("\n");
      throw new Error(`build of ${name} (${entry}) failed:\n${details}`);
    }
    const mb = (statSync(outfile).size / 1024 / 1024).toFixed(1);
    console.log(`${outfile}  ${mb} MB`);
    outputs.push(outfile);
  }
  return outputs;
}

if (import.meta.main) {
  process.chdir(ROOT);
  try {
    await buildExecutables(ENTRIES, OUTDIR);
  } catch (err) {
    console.error(`build.ts: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
