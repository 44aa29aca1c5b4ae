// Text imports of the .proto schemas: import kvsProto from "../../proto/kvs.proto" with { type: "text" }
declare module "*.proto" {
  const text: string;
  export default text;
}
