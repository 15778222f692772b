use std::cell::RefCell;
use std::rc::Rc;

use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::gateway::dialect::ClientStream;
use crate::gateway::pipeline::stream::Stage;
use crate::gateway::test_util::{data, mutations, object, parse_sse, pump};
use crate::gateway::types::Usage;
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

fn turn(id: &str) -> Turn {
    let mut turn =
        Turn { head: Head { id: id.into(), created_at: 7, store: true, ..Head::default() }, ..Turn::default() };
    turn.head.echo.insert("instructions".into(), json!("Be brief."));
    turn
}

#[test]
fn reads_a_full_request_into_the_chat_shape() {
    let body = json!({
        "model": "my-chat",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
            ]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"cat\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a feline"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "And now?"},
        ],
        "tools": [{"type": "function", "name": "lookup", "description": "Look up", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "lookup"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": false,
        "stream": true,
        "store": false,
        "user": "u-1",
        "metadata": {"trace": "t1"},
        "reasoning": {"effort": "low"},
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"],
        "stream_options": {"include_obfuscation": false},
    });
    let (name, chat, turn) = read(object(body)).unwrap();
    assert_eq!(name, "my-chat");
    assert_eq!(
        Value::Object(chat),
        json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
                ]},
                {"role": "assistant", "content": "A cat.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a feline"},
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "And now?"},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
            "max_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": false,
            "stream": true,
            "user": "u-1",
            "reasoning_effort": "low",
        })
    );
    assert!(!turn.head.store && turn.has_instructions);
    assert_eq!(turn.input.len(), 5, "instructions are not part of the stored input");
    assert_eq!(turn.head.echo["metadata"], json!({"trace": "t1"}));
    assert_eq!(turn.native["truncation"], "auto");
    let (_, chat, turn) = read(object(json!({"model": "m", "input": "hi"}))).unwrap();
    assert_eq!(Value::Object(chat), json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert!(turn.head.store && !turn.has_instructions);
}

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        (json!({"input": "x"}), "missing_model", "model: is required"),
        (json!({"model": "m"}), "invalid_request", "input: Field required"),
        (json!({"model": "m", "input": []}), "invalid_request", "input: at least one item"),
        (json!({"model": "m", "input": 5}), "invalid_request", "input: must be a string or a list"),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "invalid_request",
            "input.0.role: must be",
        ),
        (json!({"model": "m", "input": [{"role": "user"}]}), "invalid_request", "input.0.content: Field required"),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "invalid_request",
            "input.0.content.0.type: unsupported content part type \"input_audio\"",
        ),
        (
            json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "invalid_request",
            "input.0.content.0.type: unsupported content part type \"input_image\" in a assistant message",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "invalid_request",
            "input.0.call_id: Field required",
        ),
        (json!({"model": "m", "input": [{"type": "web_search_call"}]}), "unsupported_parameter", "input.0.type"),
        (json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}), "unsupported_parameter", "input.0:"),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "unsupported_parameter",
            "tools.0.type",
        ),
        (json!({"model": "m", "input": "x", "tool_choice": "sometimes"}), "invalid_request", "tool_choice: must be"),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
            "invalid_request",
            "text.format.name",
        ),
        (json!({"model": "m", "input": "x", "max_output_tokens": 0}), "invalid_request", "max_output_tokens"),
        (json!({"model": "m", "input": "x", "temperature": "hot"}), "invalid_request", "temperature: must be a number"),
        (json!({"model": "m", "input": "x", "background": true}), "unsupported_parameter", "background:"),
        (json!({"model": "m", "input": "x", "conversation": "conv_1"}), "unsupported_parameter", "conversation:"),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "bad id!"}),
            "previous_response_not_found",
            "Previous",
        ),
        (json!({"model": "m", "input": "x", "metadata": {"a": 1}}), "invalid_request", "metadata:"),
    ];
    for (body, code, message) in cases {
        let e = read(object(body.clone())).err().unwrap();
        assert_eq!(e.code, code, "{body}: {}", e.message);
        assert!(e.message.starts_with(message), "{body}: {}", e.message);
    }
}

#[test]
fn input_sizes_are_bounded() {
    let items: Vec<Value> = (0..=MAX_INPUT_ITEMS).map(|_| json!({"role": "user", "content": "x"})).collect();
    let e = read(object(json!({"model": "m", "input": items}))).err().unwrap();
    assert!(e.message.contains("at most 1024 items"), "{}", e.message);
    let parts: Vec<Value> = (0..=MAX_PARTS).map(|_| json!({"type": "input_text", "text": "x"})).collect();
    let e = read(object(json!({"model": "m", "input": [{"role": "user", "content": parts}]}))).err().unwrap();
    assert!(e.message.contains("at most 256 parts"), "{}", e.message);
    let tools: Vec<Value> = (0..=MAX_TOOLS).map(|i| json!({"type": "function", "name": format!("f{i}")})).collect();
    let e = read(object(json!({"model": "m", "input": "x", "tools": tools}))).err().unwrap();
    assert!(e.message.contains("at most 128 tools"), "{}", e.message);
}

#[test]
fn previous_response_id_alone_is_a_valid_continuation() {
    let (_, chat, turn) = read(object(json!({"model": "m", "previous_response_id": "resp_1"}))).unwrap();
    assert_eq!(chat["messages"], json!([]));
    assert_eq!(turn.head.previous_response_id.as_deref(), Some("resp_1"));
}

#[test]
fn renders_a_chat_answer_as_a_response() {
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}],
        }}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    });
    let turn = turn("resp_abc");
    let out: Value = serde_json::from_slice(&turn.render(serde_json::to_vec(&answer).unwrap()).unwrap()).unwrap();
    assert_eq!(out["id"], "resp_abc");
    assert_eq!(out["object"], "response");
    assert_eq!(out["status"], "completed");
    assert_eq!(out["created_at"], 7);
    assert_eq!(out["model"], "gpt-4o-mini");
    assert_eq!(out["instructions"], "Be brief.");
    assert_eq!(
        out["output"],
        json!([
            {"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
            {"id": "fc_abc_0", "type": "function_call", "status": "completed", "call_id": "call_9", "name": "lookup", "arguments": "{\"q\":1}"},
        ])
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19})
    );
    assert_eq!(turn.finished.borrow().as_ref().unwrap()["id"], "resp_abc", "kept for storing");

    let length = br#"{"id":"x","model":"m","choices":[{"finish_reason":"length","message":{"content":"abc"}}]}"#;
    let out: Value = serde_json::from_slice(&turn.render(length.to_vec()).unwrap()).unwrap();
    assert_eq!(
        (out["status"].as_str(), &out["incomplete_details"]),
        (Some("incomplete"), &json!({"reason": "max_output_tokens"}))
    );
    assert_eq!(turn.render(b"{}".to_vec()).unwrap_err().code, "origin_bad_response");
    assert_eq!(turn.render(b"nope".to_vec()).unwrap_err().code, "origin_bad_response");
}

#[test]
fn stored_records_carry_the_conversation() {
    let turn = turn("resp_abc");
    let answer = br#"{"id":"c","model":"m","choices":[{"finish_reason":"tool_calls","message":{"content":null,
        "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
    turn.render(answer.to_vec()).unwrap();
    let keep = Keep {
        tenant: "acme".into(),
        ttl_secs: 60,
        endpoint: "chat".into(),
        passthrough: false,
        messages: vec![json!({"role": "user", "content": "call f"})],
        response: turn.finished.clone(),
        just_stored: None,
    };
    let (key, bytes) = keep.encode().unwrap();
    assert_eq!(key, "resp:acme:resp_abc");
    let record = Record::decode(&bytes).unwrap();
    assert_eq!(
        record.messages,
        vec![
            json!({"role": "user", "content": "call f"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        ]
    );
    assert_eq!(record.response["id"], "resp_abc");
    // Nothing finished (an error): nothing stored. An origin id unfit for a key: not stored.
    let empty = Keep { response: Rc::default(), ..keep };
    assert!(empty.encode().is_none());
    *empty.response.borrow_mut() = Some(json!({"id": "resp:other:x"}));
    assert!(empty.encode().is_none());
    assert!(valid_id("resp_0A-b") && !valid_id("") && !valid_id("a:b") && !valid_id(&"x".repeat(129)));
}

#[test]
fn errors_have_openai_shape_with_param() {
    let body: Value = serde_json::from_slice(&error_body(&previous_not_found("resp_x"))).unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Previous response with id 'resp_x' not found.", "type": "invalid_request_error",
               "param": "previous_response_id", "code": "previous_response_not_found"}})
    );
    let e = read(object(json!({"model": "m", "input": [{"role": "user", "content": 1}]}))).err().unwrap();
    let body: Value = serde_json::from_slice(&error_body(&e)).unwrap();
    assert_eq!(body["error"]["param"], "input.0.content");
    let body: Value = serde_json::from_slice(&error_body(&not_found("resp_y"))).unwrap();
    assert_eq!((body["error"]["code"].as_str(), body["error"]["param"].is_null()), (Some("response_not_found"), true));
    assert_eq!(not_found("x").status, StatusCode::NOT_FOUND);
}

#[test]
fn passthrough_requests_carry_the_prepared_chat_body_in_responses_form() {
    let body = json!({
        "model": "e", "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x/cat.png"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        "max_output_tokens": 50, "temperature": 0, "stream": true, "store": false,
        "previous_response_id": "resp_prev", "reasoning": {"effort": "high"}, "metadata": {"k": "v"},
    });
    let (_, mut chat, turn) = read(object(body)).unwrap();
    chat.insert("user".into(), json!("gateway")); // an endpoint override, applied on the way
    let sent = Value::Object(passthrough_request(&turn, &chat, "gpt-4.1"));
    assert_eq!(
        sent,
        json!({
            "model": "gpt-4.1", "instructions": "Be brief.",
            "input": [
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x/cat.png", "detail": "auto"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
            "max_output_tokens": 50, "temperature": 0, "stream": true, "user": "gateway",
            "metadata": {"k": "v"}, "reasoning": {"effort": "high"},
            "previous_response_id": "resp_prev", "store": false,
        })
    );
    let (body, usage) =
        passthrough_answer(br#"{"id":"resp_o","object":"response","usage":{"input_tokens":3,"output_tokens":4}}"#)
            .unwrap();
    assert_eq!((!body.is_empty(), usage), (true, Some(Usage { prompt_tokens: 3, completion_tokens: 4 })));
    assert_eq!(passthrough_answer(br#"{"choices":[]}"#).unwrap_err().code, "origin_bad_response");
}

// --- streams ---------------------------------------------------------------------------

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn chat_stream() -> String {
    [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Let me"}), Value::Null),
        chunk(json!({"content": " check ✓"}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}\n\n".to_string(),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat()
}

fn to_responses(finished: &Rc<RefCell<Option<Value>>>) -> impl Fn() -> Vec<Stage> + '_ {
    move || {
        *finished.borrow_mut() = None;
        let head = turn("resp_s").head;
        vec![Stage::Client(ClientStream::Responses(ChatStreamToResponses::new(head, "gpt-4o", finished.clone())))]
    }
}

#[test]
fn chat_stream_becomes_typed_response_events() {
    let finished = Rc::default();
    let (events, usage) = pump(to_responses(&finished), chat_stream().as_bytes());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let d = data(&events);
    for (i, (name, event)) in events.iter().enumerate() {
        assert_eq!(event["type"].as_str(), name.as_deref(), "event name and type agree");
        assert_eq!(event["sequence_number"], i, "sequence numbers count up from 0");
    }
    assert_eq!(d[0]["response"]["status"], "in_progress");
    assert_eq!(d[0]["response"]["id"], "resp_s");
    assert_eq!(
        d[2]["item"],
        json!({"id": "msg_s", "type": "message", "status": "in_progress", "role": "assistant", "content": []})
    );
    assert_eq!(d[5]["delta"], " check ✓");
    assert_eq!(d[6]["text"], "Let me check ✓");
    assert_eq!(d[9]["output_index"], 1);
    assert_eq!(d[9]["item"]["call_id"], "call_a");
    assert_eq!(d[12]["arguments"], "{\"city\":\"Paris\"}");
    let done = &d[14]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Let me check ✓");
    assert_eq!(done["output"][1]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(done["usage"]["input_tokens"], 9);
    assert_eq!(done["usage"]["total_tokens"], 29);
    assert_eq!(usage, Some(Usage { prompt_tokens: 9, completion_tokens: 20 }));
    assert_eq!(finished.borrow().as_ref(), Some(done), "the final response is kept for storing");
}

#[test]
fn cut_or_failed_streams_end_with_error_and_failed_and_store_nothing() {
    let finished = Rc::default();
    let cut: String = chat_stream().split("\n\n").take(3).map(|e| format!("{e}\n\n")).collect();
    let (events, _) = pump(to_responses(&finished), cut.as_bytes());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(events.last().unwrap().1["response"]["status"], "failed");
    assert!(finished.borrow().is_none());

    let failed =
        format!("{cut}data: {{\"error\":{{\"message\":\"boom\",\"code\":\"origin_stream_cut\"}}}}\n\ndata: [DONE]\n\n");
    let (events, _) = pump(to_responses(&finished), failed.as_bytes());
    let errors: Vec<&Value> = events.iter().filter(|(n, _)| n.as_deref() == Some("error")).map(|(_, d)| d).collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["message"], "boom");

    // Finished but no [DONE]: completed normally. Length: incomplete.
    let no_done = chat_stream().replace("data: [DONE]\n\n", "");
    let (events, _) = pump(to_responses(&finished), no_done.as_bytes());
    assert_eq!(events.last().unwrap().0.as_deref(), Some("response.completed"));
    let length =
        [chunk(json!({"content": "abc"}), Value::Null), chunk(json!({}), json!("length")), "data: [DONE]\n\n".into()]
            .concat();
    let (events, _) = pump(to_responses(&finished), length.as_bytes());
    let (name, last) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("response.incomplete"));
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn chained_translators_carry_a_claude_stream_to_a_responses_client() {
    use crate::gateway::providers::anthropic::tests::{to_openai, TOOL_STREAM};
    use crate::gateway::types::Operation;
    let finished = Rc::default();
    let chain = || {
        let mut stages = to_openai(Operation::Chat)();
        stages.extend(to_responses(&finished)());
        stages
    };
    let (events, usage) = pump(chain, TOOL_STREAM.as_bytes());
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "response.completed");
    let call = last["response"]["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap();
    assert_eq!(call["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(usage, Some(Usage { prompt_tokens: 472, completion_tokens: 89 }), "the origin's usage counts");
}

#[test]
fn passthrough_streams_are_watched_not_rewritten() {
    let completed = json!({"type": "response.completed", "sequence_number": 3,
        "response": {"id": "resp_o", "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 5, "output_tokens": 2}}});
    let stream = format!(
        "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0}}\n\n\
         event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"hé\",\"sequence_number\":1}}\n\n\
         event: response.completed\ndata: {completed}\n\n"
    );
    let finished: Rc<RefCell<Option<Value>>> = Rc::default();
    let make = || vec![Stage::Client(ClientStream::ResponsesWatch(ResponsesWatch::new(finished.clone())))];
    let (events, usage) = pump(make, stream.as_bytes());
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].1, completed);
    assert_eq!(usage, Some(Usage { prompt_tokens: 5, completion_tokens: 2 }));
    assert_eq!(finished.borrow().as_ref().unwrap()["id"], "resp_o");

    let cut: String = stream.split("\n\n").take(2).map(|e| format!("{e}\n\n")).collect();
    let (events, usage) = pump(make, cut.as_bytes());
    assert_eq!(events.last().unwrap().1["code"], "origin_stream_cut");
    assert_eq!(events.last().unwrap().1["sequence_number"], 2);
    assert_eq!(usage, Some(Usage { prompt_tokens: 0, completion_tokens: 1 }));
}

#[test]
fn hostile_inputs_never_panic() {
    let inbound = json!({
        "model": "e", "instructions": "s", "previous_response_id": "resp_1", "store": true,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "t"}, {"type": "input_image", "image_url": "u", "detail": "low"},
                                         {"type": "input_file", "file_data": "d", "filename": "f"}]},
            {"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "o"}]},
        ],
        "tools": [{"type": "function", "name": "n", "parameters": {"type": "object"}}], "tool_choice": {"type": "function", "name": "n"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}, "max_output_tokens": 5,
        "metadata": {"a": "b"}, "reasoning": {"effort": "low"}, "truncation": "auto", "stream": true, "temperature": 1,
    });
    for body in mutations(&inbound) {
        if let Value::Object(body) = body {
            if let Ok((_, chat, turn)) = read(body) {
                let _ = passthrough_request(&turn, &chat, "m");
            }
        }
    }
    let completion = json!({
        "id": "c", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "choices": [{"finish_reason": "stop", "message": {"content": "x", "tool_calls": [{"id": "i", "function": {"name": "n", "arguments": "{}"}}]}}],
    });
    let t = turn("resp_h");
    for body in mutations(&completion) {
        let _ = t.render(serde_json::to_vec(&body).unwrap());
    }
    for response in mutations(
        &json!({"id": "resp_1", "output": [{"type": "message", "content": [{"text": "x"}]}, {"type": "function_call", "call_id": "c"}]}),
    ) {
        let _ = output_to_messages(&response);
    }
    let chunks: Vec<Value> =
        parse_sse(chat_stream().as_bytes()).into_iter().map(|(_, d)| d).filter(Value::is_object).collect();
    for (i, c) in chunks.iter().enumerate() {
        for mutated in mutations(c) {
            let mut t = ChatStreamToResponses::new(turn("resp_m").head, "m", Rc::default());
            let mut out = Vec::new();
            for (j, c) in chunks.iter().enumerate() {
                let c = if i == j { &mutated } else { c };
                t.event(&SseEvent { event: None, data: c.to_string() }, &mut out);
            }
            t.finish(&mut out);
            assert!(!out.is_empty());
        }
    }
}

/// The isolate's memo of stored responses: a minute at most (less with a shorter TTL), the
/// oldest dropped first past its byte bound, a record too large for it left to KV alone.
#[test]
fn just_stored_is_bounded_in_time_and_bytes() {
    let memo = JustStored::default();
    let record = |n: usize| -> Rc<[u8]> { vec![b'x'; n].into() };
    let has = |key: &str, at: u64| matches!(memo.get(key, at), Some(Known::Stored(_)));
    memo.put("resp:t:a", record(10), 1_000, 3600);
    memo.put("resp:t:short", record(10), 1_000, 5);
    assert!(has("resp:t:a", 60_999) && !has("resp:t:a", 61_000));
    assert!(has("resp:t:short", 5_999) && !has("resp:t:short", 6_000));
    assert!(memo.get("resp:other:a", 2_000).is_none(), "the key names the tenant");
    memo.remove("resp:t:a", 2_000);
    assert!(matches!(memo.get("resp:t:a", 2_000), Some(Known::Deleted)), "deleted here");
    assert!(
        memo.deleted("resp:t:a", 61_999) && !memo.deleted("resp:t:a", 62_000) && !memo.deleted("resp:t:short", 2_000)
    );
    // 1 MiB each (a quarter of 4 MiB): the fourth pushes the first out.
    for i in 0..4 {
        memo.put(&format!("resp:t:{i}"), record(1 << 20), 2_000, 3600);
    }
    assert!(!has("resp:t:0", 2_000) && has("resp:t:1", 2_000));
    memo.put("resp:t:huge", record((1 << 20) + 1), 2_000, 3600);
    assert!(memo.get("resp:t:huge", 2_000).is_none());
    // And in entries: 512 small ones push the 1 MiB ones out.
    for i in 0..512 {
        memo.put(&format!("resp:t:small{i}"), record(1), 2_000, 3600);
    }
    assert!(!has("resp:t:3", 2_000) && has("resp:t:small0", 2_000));
    assert!(!memo.deleted("resp:t:a", 2_000), "the deletion went with the oldest");
}
