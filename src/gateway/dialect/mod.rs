//! What clients speak: one file per API. Each parses a request into the internal (OpenAI
//! chat) shape and renders answers, streams and errors back in the client's shape.
