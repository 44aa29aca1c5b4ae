/**
 * @module logger
 * Leveled, structured logging to stderr: a constant lowercase message, then key=value fields.
 *   2026-03-01T10:22:04.118Z INFO became leader node=2 term=7
 * The default level is "warn" so that a server whose parent never reads its pipes stays quiet.
 */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
export const LOG_LEVELS = Object.keys(RANK) as LogLevel[];

export class Logger {
  readonly #threshold: number;
  readonly #fields: string;

  constructor(level: LogLevel, fields: Record<string, string | number> = {}) {
    this.#threshold = RANK[level];
    this.#fields = formatFields(fields);
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#threshold;
  }

  debug(message: string, fields?: Record<string, unknown>): void {
    this.#write("debug", message, fields);
  }
  info(message: string, fields?: Record<string, unknown>): void {
    this.#write("info", message, fields);
  }
  warn(message: string, fields?: Record<string, unknown>): void {
    this.#write("warn", message, fields);
  }
  error(message: string, fields?: Record<string, unknown>): void {
    this.#write("error", message, fields);
  }

  #write(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (RANK[level] < this.#threshold) return;
    const line = `${new Date().toISOString()} ${level.toUpperCase()} ${message}${this.#fields}${fields ? formatFields(fields) : ""}\n`;
    process.stderr.write(line);
  }
}

function formatFields(fields: Record<string, unknown>): string {
  let out = "";
  for (const [key, value] of Object.entries(fields)) {
    const text = String(value);
    out += ` ${key}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`;
  }
  return out;
}
