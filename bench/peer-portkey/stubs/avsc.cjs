// Stub of avsc (Avro decoding; needs node streams/zlib). Required lazily only when reading Cohere
// batch-output files; never on the chat-completions path.
module.exports = new Proxy({}, { get() { throw new Error("avsc is not available in this workerd build"); } });
