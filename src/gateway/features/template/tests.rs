//! Templates end to end: config checks, rendering, limits, the filters.

use super::*;
use http::StatusCode;
use serde_json::json;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn templates(v: Value) -> (Option<Templates>, Vec<String>) {
    let mut issues = Issues::default();
    let t = check("templates", &v, &mut issues);
    (t, issues.0.iter().map(ToString::to_string).collect())
}

fn one(source: Value) -> TemplateRef {
    let mut issues = Issues::default();
    let t = check_inline("endpoints[0].prompt_template", &source, &mut issues);
    assert!(issues.0.is_empty(), "{:?}", issues.0);
    t.unwrap()
}

#[test]
fn versions_default_and_refs() {
    let (t, issues) = templates(json!({
        "summarize": {"versions": {"1": "Summarize: {{ text }}",
                                   "2": {"system": "You summarize in {{ words }} words.", "user": "{{ text }}"}},
                      "default": "2"}
    }));
    assert!(issues.is_empty(), "{issues:?}");
    let t = t.unwrap();
    let mut issues = Issues::default();
    let v2 = check_ref("endpoints[0].template", "summarize", &t, &mut issues).unwrap();
    let v1 = check_ref("endpoints[1].template", "summarize@1", &t, &mut issues).unwrap();
    assert!(issues.0.is_empty());
    assert_eq!((v2.name(), v2.version()), ("summarize", "2"));
    assert_eq!(v2.variables(), ["text", "words"]);
    assert_eq!(v1.version(), "1");

    let vars = obj(json!({"text": "A long story.", "words": 5}));
    let r = render(&v2, &vars).unwrap();
    assert_eq!(r.label(), "summarize@2");
    assert_eq!(
        r.messages,
        [
            json!({"role": "system", "content": "You summarize in 5 words."}),
            json!({"role": "user", "content": "A long story."})
        ]
    );
    let r = render(&v1, &vars).unwrap();
    assert_eq!(r.messages, [json!({"role": "user", "content": "Summarize: A long story."})]);
}

#[test]
fn shorthand_messages_and_numeric_default() {
    let (t, issues) = templates(json!({
        "qa": {"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "assistant", "content": "Ready."},
                            {"role": "user", "content": "{{ q }}"}]},
        "n": {"versions": {"2": "two", "10": "ten"}}
    }));
    assert!(issues.is_empty(), "{issues:?}");
    let t = t.unwrap();
    let mut issues = Issues::default();
    let qa = check_ref("p", "qa", &t, &mut issues).unwrap();
    assert_eq!(qa.version(), "1");
    let r = render(&qa, &obj(json!({"q": "Why?"}))).unwrap();
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[1], json!({"role": "assistant", "content": "Ready."}));
    assert_eq!(r.text(), "Be brief.\n\nReady.\n\nWhy?");
    assert_eq!(check_ref("p", "n", &t, &mut issues).unwrap().version(), "10");
}

#[test]
fn compile_error_is_reported_with_path_and_line() {
    let (t, issues) = templates(json!({
        "bad": {"versions": {"1": {"system": "ok", "user": "line one\n{{ text }\n"}}, "default": "1"},
        "good": "{{ x }}"
    }));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].starts_with("templates.bad.versions.1.user: template does not compile: syntax error"),
        "{issues:?}"
    );
    assert!(issues[0].contains("(line 2)"), "{issues:?}");
    // A reference to the broken template is not reported again; others still resolve.
    let t = t.unwrap();
    let mut issues = Issues::default();
    assert!(check_ref("endpoints[0].template", "bad", &t, &mut issues).is_none());
    assert!(issues.0.is_empty());
    assert!(check_ref("endpoints[1].template", "good", &t, &mut issues).is_some());

    let mut issues = Issues::default();
    assert!(check_inline("endpoints[2].prompt_template", &json!("{% if x %}"), &mut issues).is_none());
    assert!(issues.0[0].to_string().starts_with("endpoints[2].prompt_template: template does not compile"));
}

#[test]
fn config_issues_name_paths_and_suggest() {
    let (_, issues) = templates(json!({
        "a": {"verisons": {"1": "x"}},
        "b": {"versions": {"1": "x", "2": "y"}, "default": "3"},
        "c": {"versions": {"v1": "x", "v2": "y"}},
        "d": {"messages": [{"role": "usr", "content": "x"}, {"role": "user", "content": 3}]},
        "e": {"system": "x", "usr": "y"},
        "f d": "x",
        "g": 5
    }));
    let has = |prefix: &str| issues.iter().any(|i| i.starts_with(prefix));
    assert!(
        has("templates.a.verisons: unknown template field \"verisons\" (did you mean \"versions\"?)"),
        "{issues:?}"
    );
    assert!(has("templates.b.default: unknown version \"3\""), "{issues:?}");
    assert!(has("templates.c.default: is required when the versions are not all numbers"), "{issues:?}");
    assert!(has("templates.d.messages[0].role: unknown role \"usr\" (did you mean \"user\"?)"), "{issues:?}");
    assert!(has("templates.d.messages[1].content: must be a string"), "{issues:?}");
    assert!(has("templates.e.usr: unknown template field \"usr\" (did you mean \"user\"?)"), "{issues:?}");
    assert!(has("templates.f d: \"f d\" is not a valid template name"), "{issues:?}");
    assert!(has("templates.g: must be a string"), "{issues:?}");

    let (t, _) = templates(json!({"summarize": {"versions": {"1": "x", "2": "y"}, "default": "2"}}));
    let t = t.unwrap();
    let mut issues = Issues::default();
    assert!(check_ref("endpoints[0].template", "sumarize", &t, &mut issues).is_none());
    assert!(check_ref("endpoints[1].template", "summarize@3", &t, &mut issues).is_none());
    let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
    assert_eq!(text[0], "endpoints[0].template: unknown template \"sumarize\" (did you mean \"summarize\"?)");
    assert!(text[1].starts_with("endpoints[1].template: unknown version of template \"summarize\" \"3\""), "{text:?}");
    let mut issues = Issues::default();
    assert!(check_ref("x", "any", &Templates::default(), &mut issues).is_none());
    assert!(issues.0[0].message.contains("defines no `templates`"));
}

#[test]
fn missing_variables_are_all_named() {
    let t = one(json!({"system": "Tone: {{ tone }}", "user": "{{ greeting }}, {{ name }}! {{ extra | default('') }}"}));
    let e = render(&t, &obj(json!({"greeting": "Hi"}))).unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "missing_template_variables"));
    assert!(e.message.contains("tone") && e.message.contains("name"), "{}", e.message);
    assert!(!e.message.contains("greeting"), "{}", e.message);
    // Optional variables (default filter, `if` checks) need not be sent.
    let t = one(json!("{{ a }}{% if b %} and {{ b }}{% endif %}{{ c | default('!') }}"));
    assert_eq!(render(&t, &obj(json!({"a": "x"}))).unwrap().text(), "x!");
    assert_eq!(render(&t, &obj(json!({"a": "x", "b": "y", "c": "?"}))).unwrap().text(), "x and y?");
    // Names the template binds itself (`set`, `for` targets, `loop`) are not variables.
    let t = one(json!("{% set n = xs | length %}{% for x in xs %}{{ loop.index }}{{ x }}{% endfor %}{{ n }}{{ y }}"));
    assert_eq!(t.variables(), ["xs", "y"]);
    let e = render(&t, &obj(json!({}))).unwrap_err();
    assert!(e.message.contains("needs variables that were not provided: xs, y (send"), "{}", e.message);
}

#[test]
fn mlflow_style_inline_template() {
    let t = one(json!("Answer the question: {{ question }}\nContext: {{context}}"));
    assert_eq!(t.name(), "prompt_template");
    assert_eq!(t.version().len(), 8);
    let mut body = obj(json!({"question": "Why?", "context": "none", "max_tokens": 5, "temperature": 0}));
    let vars = extract_variables(&mut body);
    assert_eq!(Value::Object(body.clone()), json!({"max_tokens": 5, "temperature": 0}));
    let r = render(&t, &vars).unwrap();
    apply(r, Operation::Completions, &mut body).unwrap();
    assert_eq!(body["prompt"], "Answer the question: Why?\nContext: none");
}

#[test]
fn extract_variables_prefers_explicit_object() {
    let mut body = obj(json!({
        "messages": [{"role": "user", "content": "hi"}], "stream": true, "topic": "cats",
        "variables": {"topic": "dogs", "n_words": 10}
    }));
    let vars = extract_variables(&mut body);
    assert_eq!(Value::Object(vars), json!({"topic": "dogs", "n_words": 10}));
    assert_eq!(Value::Object(body), json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}));
    let mut body = obj(json!({"model": "m"}));
    assert!(extract_variables(&mut body).is_empty());
    assert!(API_FIELDS.windows(2).all(|w| w[0] < w[1]), "API_FIELDS must stay sorted");
}

#[test]
fn apply_to_chat_and_refusals() {
    let t = one(json!({"system": "Be {{ mood }}."}));
    let r = render(&t, &obj(json!({"mood": "kind"}))).unwrap();
    let mut body = obj(json!({"messages": [{"role": "user", "content": "hello"}]}));
    apply(r.clone(), Operation::Chat, &mut body).unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello"}])
    );
    let mut body = obj(json!({"prompt": "x"}));
    assert_eq!(apply(r.clone(), Operation::Completions, &mut body).unwrap_err().code, "prompt_with_template");
    assert_eq!(apply(r, Operation::Embeddings, &mut Map::new()).unwrap_err().code, "template_not_supported");
}

#[test]
fn values_of_every_json_type_render() {
    let t = one(json!("{{ s }} {{ i }} {{ f }} {{ b }} {{ items | join(', ') }} {{ o.k }} {{ n is none }} {% for x in items %}[{{ x }}]{% endfor %}"));
    let vars = obj(json!({"s": "str", "i": -3, "f": 1.5, "b": true, "items": ["a", "b"], "o": {"k": "v"}, "n": null}));
    assert_eq!(render(&t, &vars).unwrap().text(), "str -3 1.5 True a, b v True [a][b]");
    // Jinja prints booleans Python-style (`True`). No HTML escaping: prompts are not HTML.
    let t = one(json!("{{ s }}"));
    assert_eq!(render(&t, &obj(json!({"s": "<b>&'\""}))).unwrap().text(), "<b>&'\"");
}

#[test]
fn fuel_and_output_limits_trip() {
    let t = one(json!("{% for a in xs %}{% for b in xs %}{{ b }}{% endfor %}{% endfor %}"));
    let xs: Vec<Value> = (0..1000).map(|_| Value::from("")).collect();
    let e = render(&t, &obj(json!({ "xs": xs }))).unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "template_too_expensive"));
    assert!(e.message.contains(&MAX_FUEL.to_string()), "{}", e.message);

    let t = one(json!("{% for i in xs %}{{ big }}{% endfor %}"));
    let xs: Vec<Value> = (0..100).map(Value::from).collect();
    let e = render(&t, &obj(json!({"big": "x".repeat(1000), "xs": xs}))).unwrap_err();
    assert_eq!(e.code, "template_output_too_large");
    assert!(e.message.contains("65536 bytes"), "{}", e.message);
    // Just under the limit is fine; the limit covers all messages together.
    let t = one(json!("{{ big }}"));
    assert_eq!(render(&t, &obj(json!({"big": "x".repeat(MAX_OUTPUT_BYTES)}))).unwrap().text().len(), MAX_OUTPUT_BYTES);
    let t = one(json!({"system": "{{ big }}", "user": "{{ big }}"}));
    let e = render(&t, &obj(json!({"big": "x".repeat(MAX_OUTPUT_BYTES / 2 + 1)}))).unwrap_err();
    assert_eq!(e.code, "template_output_too_large");
}

#[test]
fn fuel_is_one_budget_for_all_messages() {
    // Each message alone fits in the budget, both together do not.
    let t = one(json!({"system": "{% for x in xs %}{% endfor %}", "user": "{% for x in xs %}{% endfor %}"}));
    let xs: Vec<Value> = (0..(MAX_FUEL as usize / 5)).map(Value::from).collect();
    let e = render(&t, &obj(json!({ "xs": xs }))).unwrap_err();
    assert_eq!(e.code, "template_too_expensive");
    let t = one(json!({"system": "{% for x in xs %}{% endfor %}"}));
    assert!(render(&t, &obj(json!({ "xs": xs }))).is_ok());
}

#[test]
fn sandbox_tags_and_unknown_names_fail_at_compile_time() {
    // No loader: a template cannot pull in another one (nor define macros).
    for (i, tag) in ["include", "import", "from", "extends", "block", "macro", "call"].iter().enumerate() {
        let source = match *tag {
            "from" => "{% from 'x' import y %}".to_string(),
            "import" => "{% import 'x' as y %}".to_string(),
            "block" => "{% block b %}{% endblock %}".to_string(),
            "macro" => "{% macro m() %}{% endmacro %}".to_string(),
            "call" => "{% call m() %}{% endcall %}".to_string(),
            other => format!("{{% {other} '/etc/passwd' %}}"),
        };
        let mut issues = Issues::default();
        let path = format!("endpoints[{i}].prompt_template");
        assert!(check_inline(&path, &json!(source), &mut issues).is_none(), "{source}");
        assert_eq!(
            issues.0[0].to_string(),
            format!(
                "{path}: template does not compile: `{{% {tag} %}}` is not supported in prompt templates: \
                 they cannot load other templates or define macros (line 1)"
            )
        );
    }
    for (source, expected) in [
        ("{{ x | nosuchfilter }}", "unknown filter `nosuchfilter` (line 1)"),
        ("a\n{% filter nosuch %}x{% endfilter %}", "unknown filter `nosuch` (line 2)"),
        ("{{ x is odd }}{{ x is not nosuchtest }}", "unknown test `nosuchtest` (line 1)"),
        ("{{ x.upper() }}", "unknown method `upper()` (available: items, keys, values, cycle, changed) (line 1)"),
        ("{{ range(3) }}", "unknown function `range()`: templates have no functions (line 1)"),
        ("{{ xs | map('upper') }}", "unknown filter `map` (line 1)"),
    ] {
        let mut issues = Issues::default();
        assert!(check_inline("p", &json!(source), &mut issues).is_none(), "{source}");
        let message = issues.0[0].to_string();
        assert!(message.starts_with("p: template does not compile: "), "{message}");
        assert!(message.contains(expected), "{source}: {message}");
    }
    // Names that are not calls: keywords before `(`, filter and test arguments, methods
    // on the loop, recursive loops.
    for source in [
        "{% if (a or b) and not (c) %}{% endif %}{% for (k, v) in o|items %}{% endfor %}",
        "{{ xs | join(', ') }}{{ n | default(3) }}{{ s is not string }}{{ x if (a) else (b) }}{{ (n) }}",
        "{% for x in xs %}{{ loop.cycle('a', 'b') }}{{ loop.changed(x) }}{% endfor %}",
        "{% for x in xs recursive %}{{ loop(x) if x is sequence }}{% endfor %}{% filter upper %}x{% endfilter %}",
    ] {
        let mut issues = Issues::default();
        assert!(check_inline("p", &json!(source), &mut issues).is_some(), "{source}: {:?}", issues.0);
    }
}

#[test]
fn runtime_errors_are_400_with_line() {
    let t = one(json!("a\n{{ x.y.z }}"));
    let e = render(&t, &obj(json!({"x": {}}))).unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "template_render_failed"));
    assert!(e.message.ends_with("failed: undefined value: `x.y` is undefined (line 2)"), "{}", e.message);
    let t = one(json!("{% for i in n %}{% endfor %}"));
    let e = render(&t, &obj(json!({"n": 5}))).unwrap_err();
    assert!(e.message.ends_with("failed: invalid operation: number is not iterable (line 1)"), "{}", e.message);
    let t = one(json!("\n\n{{ a / b }}"));
    let e = render(&t, &obj(json!({"a": 1, "b": 0}))).unwrap_err();
    assert_eq!(e.code, "template_render_failed");
    assert!(e.message.ends_with("(line 3)"), "{}", e.message);
}

fn render_str(source: &str, vars: Value) -> String {
    render(&one(json!(source)), &obj(vars)).unwrap().text()
}

#[test]
fn engine_statements() {
    let vars = json!({"items": ["a", "b", "c"], "user": {"name": "Ann", "tags": ["x"]}, "empty": [], "mode": "brief"});
    assert_eq!(
        render_str(
            "{% for i in items %}{{ loop.index }}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}",
            vars.clone()
        ),
        "1a,2b,3c"
    );
    assert_eq!(
        render_str(
            "{% for i in items %}{{ loop.index0 }}{{ loop.first }}{{ loop.revindex }}{{ loop.length }} {% endfor %}",
            vars.clone()
        ),
        "0True33 1False23 2False13 "
    );
    assert_eq!(render_str("{% for i in empty %}x{% else %}none{% endfor %}", vars.clone()), "none");
    // Lists and dicts print as Python (and so MLflow's Jinja) writes them; `tojson` for JSON.
    assert_eq!(
        render_str("{% for k, v in user.items() %}{{ k }}={{ v }};{% endfor %}", vars.clone()),
        "name=Ann;tags=['x'];"
    );
    assert_eq!(
        render_str(
            "{{ user.keys() | join(',') }} {{ user.values() | first }} {{ user | items | length }}",
            vars.clone()
        ),
        "name,tags Ann 2"
    );
    assert_eq!(render_str("{% for k in user %}{{ k }} {% endfor %}", vars.clone()), "name tags ");
    assert_eq!(
        render_str("{% if mode == 'long' %}L{% elif mode == 'brief' %}B{% else %}?{% endif %}", vars.clone()),
        "B"
    );
    assert_eq!(render_str("{% if missing %}yes{% else %}no{% endif %}", vars.clone()), "no");
    assert_eq!(render_str("{% if missing is defined or 'a' in items %}in{% endif %}", vars.clone()), "in");
    assert_eq!(render_str("{% if 'z' not in items and items|length >= 3 %}ok{% endif %}", vars.clone()), "ok");
    assert_eq!(render_str("{{ items[0] }}{{ items[-1] }}{{ user['name'] }}{{ items.1 }}", vars.clone()), "acAnnb");
    assert_eq!(render_str("{# note #}a {{- ' b ' -}} c{% raw %}{{ not }}{% endraw %}", vars.clone()), "a b c{{ not }}");
    assert_eq!(render_str("line\n  {%- if true %} x{% endif %}\n", vars.clone()), "line x");
    assert_eq!(render_str("{{ \"say \\\"hi\\\"\\n\" }}", vars.clone()), "say \"hi\"\n");
    assert_eq!(render_str("{{ [1, 2.5, -3, true, none] }}", vars.clone()), "[1, 2.5, -3, True, None]");
    // What minijinja adds over the old engine: assignments, blocks, inline `if`, math.
    assert_eq!(
        render_str(
            "{% set n = items | length %}{% set greeting %}Hi {{ user.name }}{% endset %}{{ greeting }} {{ n * 2 }} \
             {{ 7 // 2 }} {{ 2 ** 3 }} {{ 'x' if mode == 'brief' else 'y' }} {{ items[1:] | join }} \
             {% with who = user.name | upper %}{{ who }}{% endwith %}{% filter upper %} yes{% endfilter %}",
            vars.clone()
        ),
        "Hi Ann 6 3 8 x bc ANN YES"
    );
    assert_eq!(
        render_str(
            "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.depth }}{{ a }}{{ b }} {% endfor %}{% endfor %}",
            vars
        ),
        "11x 11y 12x 12y "
    );
}

#[test]
fn engine_filters() {
    let vars = json!({"s": "  hello World  ", "xs": ["a", "b"], "n": 3, "o": {"k": [1], "b": "<x>"}});
    // Each filter MLflow-style prompts use, on its own.
    let cases = [
        ("{{ missing | default('dflt') }}", "dflt"),
        ("{{ missing | d }}|{{ n | default(5) }}|{{ '' | default('e') }}|{{ '' | default('e', true) }}", "|3||e"),
        (
            "{{ xs | join(', ') }}|{{ xs | join }}|{{ [1, none, true] | join('-') }}|{{ 'ab' | join('.') }}",
            "a, b|ab|1-None-True|a.b",
        ),
        ("{{ s | upper }}|{{ 'Ärger über Ωmega' | upper }}", "  HELLO WORLD  |ÄRGER ÜBER ΩMEGA"),
        ("{{ s | lower }}|{{ 'ÄRGER' | lower }}", "  hello world  |ärger"),
        ("[{{ s | trim }}]|[{{ '--x--' | trim('-') }}]", "[hello World]|[x]"),
        ("{{ xs | length }}|{{ s | length }}|{{ o | length }}|{{ 'é' | count }}", "2|15|2|1"),
        // `tojson` writes what Python's Jinja writes (`json.dumps`: `", "` and `": "`, keys
        // sorted), but does not HTML-escape: prompts are not HTML.
        ("{{ o | tojson }}", "{\"b\": \"<x>\", \"k\": [1]}"),
        (
            "{{ xs | tojson(indent=2) }}|{{ \"it's\" | tojson }}|{{ none | tojson }}",
            "[\n  \"a\",\n  \"b\"\n]|\"it's\"|null",
        ),
        ("{{ s | trim | title }}|{{ 'hELLO wORLD' | capitalize }}", "Hello World|Hello world"),
        ("{{ xs | first }}{{ xs | last }}|{{ 'xyz' | first }}{{ 'xyz' | last }}", "ab|xz"),
        ("{{ 'a-b-c' | replace('-', '+') }}|{{ 'a-b-c' | replace('-', '', 1) }}", "a+b+c|ab-c"),
        ("{{ n | string ~ '!' }}|{{ xs | string }}|{{ o | items | first | first }}", "3!|['a', 'b']|b"),
        (
            "{{ n is number }}{{ s is string }}{{ true is boolean }}{{ o is mapping }}{{ xs is sequence }}",
            "TrueTrueTrueTrueTrue",
        ),
        ("{{ n is odd }}{{ n is even }}{{ missing is undefined }}{{ none is none }}", "TrueFalseTrueTrue"),
    ];
    for (source, expected) in cases {
        assert_eq!(render_str(source, vars.clone()), expected, "{source}");
    }
    // Filters need defined values; a wrong type is a 400.
    let e = render(&one(json!("{{ missing | upper }}")), &obj(json!({}))).unwrap_err();
    assert_eq!(e.code, "missing_template_variables");
    let e = render(&one(json!("{{ n | length }}")), &obj(json!({"n": 3}))).unwrap_err();
    assert!(
        e.message.ends_with("failed: invalid operation: cannot take the length of a number (line 1)"),
        "{}",
        e.message
    );
}

#[test]
fn engine_syntax_errors() {
    for (source, expected) in [
        ("{% if x %}open", "syntax error: unexpected end of input, expected end of block (line 1)"),
        ("a\n{% for x in %}", "syntax error: unexpected end of block (line 2)"),
        ("{{ x ", "syntax error: unexpected end of input, expected end of variable block (line 1)"),
        ("{% endif %}", "syntax error: unknown statement endif (line 1)"),
        ("{% frobnicate %}", "syntax error: unknown statement frobnicate (line 1)"),
        ("{{ 'unterminated }}", "syntax error: unexpected end of string (line 1)"),
        ("{{ x @ y }}", "syntax error: unexpected character (line 1)"),
        ("{% raw %}never closed", "syntax error: unexpected end of raw block (line 1)"),
    ] {
        let mut issues = Issues::default();
        assert!(check_inline("p", &json!(source), &mut issues).is_none(), "{source}");
        let message = issues.0[0].to_string();
        assert_eq!(message, format!("p: template does not compile: {expected}"), "{source}");
    }
    // Nesting is bounded when parsing (150 levels), so that neither the parser nor the
    // renderer can run out of stack.
    for deep in [
        format!("{}x{}", "{% if a %}".repeat(200), "{% endif %}".repeat(200)),
        format!("{{{{ {}x{} }}}}", "(".repeat(200), ")".repeat(200)),
    ] {
        let mut issues = Issues::default();
        assert!(check_inline("p", &json!(deep), &mut issues).is_none());
        assert!(issues.0[0].message.contains("template exceeds maximum recursion limits"), "{:?}", issues.0);
    }
}

#[test]
fn engine_never_panics() {
    // Random splices of template fragments: compile and render must return, never panic.
    let pieces = [
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        "-",
        " if ",
        " for ",
        " in ",
        " endif ",
        " endfor ",
        " else ",
        "x",
        "xs",
        "'s",
        "\"",
        "(",
        ")",
        "[",
        "]",
        ".",
        "|",
        " default",
        " join",
        "loop",
        ".index",
        "1",
        "-1",
        "==",
        " not ",
        " is ",
        " defined",
        "~",
        ",",
        "é",
        "\n",
        " raw ",
        " endraw ",
        ".items()",
        "0.5",
        "_",
        " set ",
        "=",
        "*",
        " recursive ",
        "xs(",
        "9999999",
        ":",
    ];
    let vars = obj(json!({"x": "v", "xs": [1, {"a": 2}], "s": null}));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..5000 {
        let mut source = String::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        for i in 0..(seed % 12) {
            source.push_str(pieces[((seed >> (i * 5)) % pieces.len() as u64) as usize]);
        }
        let mut issues = Issues::default();
        if let Some(t) = check_inline("p", &json!(source), &mut issues) {
            let _ = render(&t, &vars);
        }
    }
}

/// A test-only allocator that tracks, per thread, the most memory held at once: what the
/// bounds below promise is memory that is never allocated, which only the allocator sees.
mod memory {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    fn grow(n: usize) {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + n);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
    }

    fn shrink(n: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
    }

    // SAFETY: every call is passed through to `System` unchanged; the bookkeeping only
    // touches const-initialized thread-locals (no allocation, no destructor).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            shrink(layout.size());
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, new_size) };
            if !q.is_null() {
                grow(new_size);
                shrink(layout.size());
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Runs `f`; returns its result and the most memory this thread held meanwhile, beyond
    /// what it held before.
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(base));
        let result = f();
        (result, PEAK.with(Cell::get).saturating_sub(base))
    }
}

#[test]
fn loops_iterate_lazily_and_long_strings_are_refused() {
    // Issue 12 M8. Iterating a string (or a list) does not build all its items first: a
    // loop over 32,768 characters (64 KiB) runs out of fuel holding about what the variables
    // hold (the old engine built 32,768 values, ~2 MB, before charging the first step).
    let t = one(json!("{% for c in s %}{{ c }}{% endfor %}"));
    let s = "é".repeat(MAX_OUTPUT_BYTES / 2);
    let vars = obj(json!({ "s": s }));
    let (result, peak) = memory::peak(|| render(&t, &vars));
    assert_eq!(result.unwrap_err().code, "template_too_expensive");
    assert!(peak < 512 * 1024, "peak {peak} bytes");
    // Longer strings never reach the engine: minijinja does not charge for scanning a
    // string when indexing, slicing or comparing it, so the length of one string bounds
    // the work of one step. Its path is named.
    let t = one(json!("{% for i in xs %}{{ doc[-1] }}{% endfor %}"));
    let vars = obj(json!({"xs": [1], "doc": "x".repeat(MAX_OUTPUT_BYTES + 1)}));
    let e = render(&t, &vars).unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "template_variable_too_large"));
    assert!(e.message.starts_with("template variable `doc` is longer than 65536 bytes"), "{}", e.message);
    let vars = obj(json!({"xs": [1, {"deep": ["", "x".repeat(MAX_OUTPUT_BYTES + 1)]}], "doc": ""}));
    assert!(render(&t, &vars).unwrap_err().message.contains("`xs[1].deep[1]`"));
    let vars = obj(json!({"xs": [1], "doc": "x".repeat(MAX_OUTPUT_BYTES)}));
    assert_eq!(render(&t, &vars).unwrap().text(), "x");
}

#[test]
fn huge_output_is_refused_before_it_is_allocated() {
    for (source, code) in [
        // Straight to the output: stops at the cap.
        ("{% for i in xs %}{{ big }}{% endfor %}", "template_output_too_large"),
        // A lazily repeated list printed into a `{% set %}` block (buffered, charged only
        // after it is written): one printed value may not exceed the cap either.
        ("{% set x %}{{ [big] * 100000000 }}{% endset %}{{ x | length }}", "template_output_too_large"),
        ("{% filter upper %}{{ [xs] * 100 }}{% endfilter %}", "template_output_too_large"),
        // Filters pay for what they build before they build it.
        ("{{ ([big] * 100000000) | join | length }}", "template_too_expensive"),
        ("{{ ([big] * 100000000) | tojson | length }}", "template_too_expensive"),
        ("{{ ([big] * 100000000) | string | length }}", "template_too_expensive"),
        ("{{ (big * 100) | replace('x', big) | length }}", "template_too_expensive"),
        ("{{ ([big] * 100000000) | upper | length }}", "template_too_expensive"),
        ("{{ 'x' | replace('x', [big] * 100000000) | length }}", "template_too_expensive"),
        // A string of known size is refused before it is built.
        ("{{ big * 1000000000 }}", "template_too_expensive"),
        ("{{ (big * 10000) | length }}", "template_too_expensive"),
    ] {
        let t = one(json!(source));
        let xs: Vec<u32> = (0..1000).collect();
        let vars = obj(json!({"big": "x".repeat(1000), "xs": xs}));
        let (result, peak) = memory::peak(|| render(&t, &vars));
        let e = result.unwrap_err();
        assert_eq!(e.code, code, "{source}: {}", e.message);
        // Bounded by the fuel: `MAX_FUEL * 64` bytes, twice that while a buffer grows; without
        // the bounds these would need gigabytes.
        assert!(peak < 2 * 64 * MAX_FUEL as usize + (1 << 20), "{source}: peak {peak} bytes");
    }
}
