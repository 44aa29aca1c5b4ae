/**
 * @module storage/rocks
 * A promise-based view of the `rocksdb` package (the Level binding), typed for what we use.
 * One RocksDB instance per server holds the Raft log, the hard state and the key-value data, so
 * that a single synced batch can make several of them durable together.
 */
import rocksdb from "rocksdb";

export type BatchOp =
  | { type: "put"; key: string; value: string | Uint8Array }
  | { type: "del"; key: string };

interface LevelIterator {
  next(callback: (error: Error | undefined, key?: Buffer, value?: Buffer) => void): void;
  end(callback: (error?: Error) => void): void;
}

interface LevelDown {
  open(options: { createIfMissing: boolean }, callback: (error?: Error) => void): void;
  close(callback: (error?: Error) => void): void;
  get(key: string, options: { asBuffer: boolean }, callback: (error: Error | undefined, value?: Buffer) => void): void;
  batch(ops: BatchOp[], options: { sync: boolean }, callback: (error?: Error) => void): void;
  iterator(options: { gte?: string; lt?: string; keyAsBuffer: boolean; valueAsBuffer: boolean }): LevelIterator;
}

export class Rocks {
  readonly #db: LevelDown;
  readonly path: string;

  private constructor(db: LevelDown, path: string) {
    this.#db = db;
    this.path = path;
  }

  /** Opens (creating if needed) the database at `path`; the parent directory must exist. */
  static async open(path: string): Promise<Rocks> {
    const db = (rocksdb as unknown as (location: string) => LevelDown)(path);
    await new Promise<void>((resolve, reject) =>
      db.open({ createIfMissing: true }, (error) => (error ? reject(error) : resolve())),
    );
    return new Rocks(db, path);
  }

  /** The value at `key`, or undefined when there is none. */
  get(key: string): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) =>
      this.#db.get(key, { asBuffer: true }, (error, value) => {
        if (error) {
          if (/NotFound/i.test(error.message)) resolve(undefined);
          else reject(error);
        } else resolve(value);
      }),
    );
  }

  /** Applies `ops` atomically; with `sync`, returns only once they are on disk (fdatasync). */
  batch(ops: BatchOp[], sync: boolean): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#db.batch(ops, { sync }, (error) => (error ? reject(error) : resolve())),
    );
  }

  /** Every (key, value) with gte <= key < lt, in key order. */
  async scan(gte: string, lt: string, visit: (key: string, value: Buffer) => void): Promise<void> {
    const iterator = this.#db.iterator({ gte, lt, keyAsBuffer: false, valueAsBuffer: true });
    try {
      for (;;) {
        const item = await new Promise<[string, Buffer] | null>((resolve, reject) =>
          iterator.next((error, key, value) => {
            if (error) reject(error);
            else resolve(key === undefined ? null : [String(key), value!]);
          }),
        );
        if (item === null) return;
        visit(item[0], item[1]);
      }
    } finally {
      await new Promise<void>((resolve) => iterator.end(() => resolve()));
    }
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.#db.close((error) => (error ? reject(error) : resolve())));
  }
}
