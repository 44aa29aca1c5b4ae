/**
 * @module cli/parse-args
 * `arg`, plus one thing it cannot do for us: take the word after an option as that option's
 * value whatever it looks like. Keys and values are data ("-v -1", "-v $'a\nb'"), and "-i -1"
 * deserves "-i must be a number" rather than "option requires argument". `arg` treats a word
 * starting with "-" as an option and cuts "--value=a\nb" at the newline, so the values of
 * String options are taken out first and `arg` parses the rest (booleans, unknown options).
 */
import arg from "arg";

type Spec = Record<string, StringConstructor | BooleanConstructor | string>;

export function parseArgs<T extends Spec>(spec: T, argv: string[]): arg.Result<T> {
  const canonical = (name: string): string | undefined => {
    const target = spec[name];
    return typeof target === "string" ? target : target === undefined ? undefined : name;
  };
  const takesValue = (name: string | undefined): name is string => name !== undefined && spec[name] === String;

  const values: Record<string, string> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    const equals = word.startsWith("--") ? word.indexOf("=") : -1;
    const name = canonical(equals > 0 ? word.slice(0, equals) : word);
    if (takesValue(name) && equals > 0) {
      values[name] = word.slice(equals + 1);
    } else if (takesValue(name) && i + 1 < argv.length) {
      values[name] = argv[++i]!;
    } else {
      rest.push(word);
    }
  }
  return { ...arg(spec, { argv: rest }), ...values } as arg.Result<T>;
}
