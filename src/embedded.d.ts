// Text imports of the .proto schemas: import kvsProto from "../../proto/kvs.proto" with { type: "text" }
declare module "*.proto" {
  const text: string;
  export default text;
}

// The Level binding ships no types; src/storage/rocks.ts types the part we use.
declare module "rocksdb" {
  const rocksdb: unknown;
  export default rocksdb;
}
