use switchyard_sdk::Verdict;

use crate::config::Config;
use crate::evaluate;

/// A request whose last user message is `prompt`.
pub fn request(prompt: &str) -> String {
    serde_json::json!({"model": "m", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": prompt},
    ]})
    .to_string()
}

/// A one-choice completion.
pub fn answer(content: Option<&str>, finish: &str) -> String {
    serde_json::json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish,
            "message": {"role": "assistant", "content": content}}]})
    .to_string()
}

fn judge(prompt: &str, content: &str, finish: &str) -> Verdict {
    evaluate(
        &Config::default(),
        &request(prompt),
        &answer(Some(content), finish),
    )
    .unwrap()
}

const PROMPT: &str = "How does ownership work in Rust, and why does the borrow checker reject \
    some programs that look correct?";

/// About 2 KB of a good answer to [`PROMPT`]: prose, a list and code.
pub const LONG: &str = "Ownership is the set of rules Rust uses to manage memory without a \
garbage collector. Every value has a single owner, the variable that holds it, and when the \
owner goes out of scope the value is dropped and its memory released.\n\n\
There are three rules worth remembering:\n\n\
1. Each value has exactly one owner at a time.\n\
2. Assigning or passing a value moves ownership unless the type is `Copy`.\n\
3. When the owner goes out of scope, the value is dropped.\n\n\
Borrowing lets code use a value without taking ownership. A shared reference (`&T`) allows \
reading, and any number of them may exist at once; a mutable reference (`&mut T`) allows \
writing, but only one may exist, and never alongside shared ones.\n\n\
```rust\nfn main() {\n    let mut names = vec![String::from(\"a\")];\n    let first = &names[0];\n    \
names.push(String::from(\"b\")); // error: cannot borrow as mutable\n    println!(\"{first}\");\n}\n```\n\n\
The borrow checker rejects this program even though it looks correct: pushing may reallocate \
the vector, which would leave `first` pointing at freed memory. The checker cannot see whether \
a reallocation happens, so it rejects every program where a mutable borrow overlaps a shared \
one. Non-lexical lifetimes make it smarter than it used to be: a borrow now ends at its last \
use rather than at the end of the block, so moving the `println!` above the `push` compiles.\n\n\
Some correct programs are still rejected because the analysis is conservative. Borrowing two \
different fields of a struct through a method, or two halves of a slice, looks like two mutable \
borrows of the same value; `split_at_mut` and destructuring are the usual ways around it. When \
a design fights the checker for long, shared ownership with `Rc<RefCell<T>>` or indices into a \
vector are often simpler than references.\n\nIn short, ownership gives memory safety without \
runtime cost, and the borrow checker enforces it by proving, at compile time, that no \
reference outlives its value or aliases a mutable one.";

#[test]
fn good_answers_pass_cleanly() {
    assert!((1900..2300).contains(&LONG.len()), "{}", LONG.len());
    for (prompt, content) in [
        (PROMPT, LONG),
        ("What is the capital of France?", "Paris."),
        ("hi", "Hello! How can I help you today?"),
        (
            PROMPT,
            "Because it checks borrows conservatively: see the Rust book, chapter 4",
        ),
        ("List three primary colours", "- red\n- blue\n- yellow"),
        (
            "今日の天気はどうですか？東京の天気を教えてください。",
            "東京の今日の天気は晴れです。",
        ),
        (
            "Write a haiku about the sea",
            "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time",
        ),
    ] {
        let v = judge(prompt, content, "stop");
        assert!(v.pass && v.reasons.is_empty(), "{content}: {v:?}");
        assert!(v.score > 0.9, "{content}: {v:?}");
    }
}

#[test]
fn tool_calls_pass_unless_malformed() {
    let calls = |args: &str| {
        serde_json::json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]}}]})
        .to_string()
    };
    let v = evaluate(
        &Config::default(),
        &request(PROMPT),
        &calls(r#"{"city":"Paris"}"#),
    )
    .unwrap();
    assert!(v.pass && v.score == 1.0 && v.reasons.is_empty());
    let v = evaluate(&Config::default(), &request(PROMPT), &calls(r#"{"city":"#)).unwrap();
    assert!(!v.pass && v.score == 0.0);
    assert!(
        v.reasons[0].contains("malformed tool call") && v.reasons[0].contains("not valid JSON")
    );
}

#[track_caller]
fn fails_naming(v: &Verdict, component: &str, rule: &str) {
    assert!(!v.pass, "{v:?}");
    assert!(v.reasons[0].starts_with("low quality: score"), "{v:?}");
    let r = v.reasons.iter().find(|r| r.starts_with(component));
    assert!(
        r.is_some_and(|r| r.contains(rule)),
        "{component} / {rule}: {v:?}"
    );
}

#[test]
fn each_failure_mode_is_named() {
    let v = judge(PROMPT, "   ", "stop");
    assert!(!v.pass && v.score == 0.0 && v.reasons == ["completeness 0.00: empty answer"]);

    let cut = &LONG[..LONG.find("Non-lexical").unwrap() - 20];
    let v = judge(PROMPT, cut, "length");
    // Cut-off alone (relevant, coherent) is a low pass: another deployment
    // would likely hit the same token limit.
    assert!(
        v.pass && v.reasons[0].contains("finish_reason length"),
        "{v:?}"
    );
    assert!(v.reasons[0].contains("ends mid-sentence"), "{v:?}");

    let looped = format!(
        "{} {}",
        &LONG[..600],
        "I will check the borrow again. ".repeat(30)
    );
    let v = judge(PROMPT, &looped, "length");
    fails_naming(&v, "completeness", "degenerate loop");
    fails_naming(&v, "coherence", "degenerate loop: the last");

    let v = judge(
        PROMPT,
        &format!("Ownership in Rust: {}", "!".repeat(400)),
        "stop",
    );
    assert!(
        v.reasons.iter().any(|r| r.contains("'!' 400 times")),
        "{v:?}"
    );

    // Coherence alone weighs 0.25: at the default threshold it fails an
    // answer only together with another component.
    let strict = Config::parse(r#"{"threshold": 0.85}"#).unwrap();
    let strict = |content: &str, finish: &str| {
        evaluate(&strict, &request(PROMPT), &answer(Some(content), finish)).unwrap()
    };
    let unclosed = format!(
        "Ownership and the borrow checker, in code:\n```rust\n{}",
        "let x = 1;\n".repeat(5)
    );
    fails_naming(
        &strict(&unclosed, "stop"),
        "completeness 0.50",
        "unclosed code fence",
    );

    let garbled = "Ownership\u{0}\u{1}\u{2}\u{FFFD}\u{FFFD} borrow \u{7}\u{8}\u{FFFD}\u{FFFD}\u{FFFD} rust checker \u{1b}\u{FFFD}";
    fails_naming(
        &strict(garbled, "stop"),
        "coherence 0.00",
        "unprintable characters",
    );

    let noise = format!(
        "Rust ownership borrow checker {} {}.",
        "x".repeat(300),
        "abcdefghij".repeat(20)
    );
    fails_naming(
        &strict(&noise, "stop"),
        "coherence 0.00",
        "words over 45 characters",
    );

    let lines = "The borrow checker says no.\n".repeat(8);
    fails_naming(
        &strict(&lines, "stop"),
        "coherence",
        "7 of 8 lines are repeats",
    );

    let first = &LONG[..LONG.find("\n\n").unwrap()];
    let v = strict(
        &format!("{first} Borrowing, by contrast, lets the checker see that the"),
        "stop",
    );
    fails_naming(&v, "completeness 0.60", "ends mid-sentence (\"");

    let long_prompt = format!(
        "{PROMPT} {}",
        "Please consider lifetimes, moves, clones and smart pointers too. ".repeat(6)
    );
    let v = evaluate(
        &Config::parse(r#"{"threshold": 0.85}"#).unwrap(),
        &request(&long_prompt),
        &answer(Some("Ok"), "stop"),
    )
    .unwrap();
    fails_naming(
        &v,
        "completeness 0.30",
        "very short answer (1 words) to a long prompt (72 words)",
    );
}

#[test]
fn relevance_counts_only_with_its_weight() {
    let off_topic = "Tomatoes grow best in full sun with deep, even watering. Plant them \
        after the last frost, stake them early, and pinch the suckers that form between stem \
        and branch so the plant puts its energy into fruit. Mulch keeps the soil moist and \
        prevents blight from splashing onto the leaves. Feed every two weeks once flowers \
        appear, and pick the fruit when it is evenly coloured and gives slightly when pressed.";
    let v = judge(PROMPT, off_topic, "stop");
    assert!(
        v.pass,
        "relevance alone cannot fail at the default weights: {v:?}"
    );
    assert!(
        v.reasons
            .iter()
            .any(|r| r.starts_with("relevance 0.25: shares 0 of")),
        "{v:?}"
    );
    let strict =
        Config::parse(r#"{"weights": {"relevance": 1, "completeness": 0, "coherence": 0}}"#)
            .unwrap();
    let v = evaluate(&strict, &request(PROMPT), &answer(Some(off_topic), "stop")).unwrap();
    fails_naming(&v, "relevance", "content words");
    let v = evaluate(&strict, &request(PROMPT), &answer(Some(LONG), "stop")).unwrap();
    assert!(v.pass && v.score == 1.0, "{v:?}");
}

#[test]
fn the_threshold_is_configurable() {
    let cut = &LONG[..LONG.find("Non-lexical").unwrap() - 20];
    let strict = Config::parse(r#"{"threshold": 0.9}"#).unwrap();
    let v = evaluate(&strict, &request(PROMPT), &answer(Some(cut), "length")).unwrap();
    fails_naming(&v, "completeness", "finish_reason length");
    let lax = Config::parse(r#"{"threshold": 0}"#).unwrap();
    let v = evaluate(&lax, &request(PROMPT), &answer(Some("  "), "stop")).unwrap();
    assert!(!v.pass, "an empty answer fails at any threshold");
}

#[test]
fn several_choices_take_the_worst() {
    let response = serde_json::json!({"choices": [
        {"index": 0, "finish_reason": "stop", "message": {"content": LONG}},
        {"index": 1, "finish_reason": "stop", "message": {"content": ""}}]})
    .to_string();
    let v = evaluate(&Config::default(), &request(PROMPT), &response).unwrap();
    assert!(!v.pass && v.score == 0.0);
    assert_eq!(v.reasons, ["choice 1: completeness 0.00: empty answer"]);
}

#[test]
fn odd_inputs_never_panic() {
    let deep = "[".repeat(10_000);
    let huge = format!(
        r#"{{"choices":[{{"finish_reason":1e999999,"message":{{"content":"{}"}}}}]}}"#,
        "9".repeat(5000)
    );
    let long_word = "a".repeat(100_000);
    let inputs = [
        "",
        "null",
        "not json",
        "[]",
        "{}",
        r#"{"choices":null}"#,
        r#"{"choices":[]}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[{}]}"#,
        r#"{"choices":[{"message":null}]}"#,
        r#"{"choices":[{"message":{"content":null}}]}"#,
        r#"{"choices":[{"message":{"content":7}}]}"#,
        r#"{"choices":[{"message":{"content":"\u0000\ud800"}}]}"#,
        r#"{"choices":[{"message":{"content":"x","tool_calls":"nope"}}]}"#,
        r#"{"choices":[["stop",{"content":"x"}]]}"#,
        &deep,
        &huge,
        &long_word,
    ];
    for request in inputs
        .iter()
        .chain([&request(PROMPT).as_str(), &request(&deep).as_str()])
    {
        for response in inputs
            .iter()
            .chain([&answer(Some(&long_word), "stop").as_str()])
        {
            if let Ok(v) = evaluate(&Config::default(), request, response) {
                assert!((0.0..=1.0).contains(&v.score), "{response}: {v:?}");
            }
        }
    }
    for text in [
        "\n\n\n",
        "```",
        "1.",
        "a\u{FFFD}",
        "東京",
        "- x\n- x\n- x\n- x",
        "🙂🙂🙂",
    ] {
        let v = judge(PROMPT, text, "stop");
        assert!((0.0..=1.0).contains(&v.score), "{text}: {v:?}");
    }
}

/// The best of 20 batches (the least disturbed by other work), in µs.
pub fn time(f: impl Fn()) -> f64 {
    (0..20)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..1000 {
                f();
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// `cargo test --release -p quality -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing() {
    let (req, resp) = (request(PROMPT), answer(Some(LONG), "stop"));
    let config = Config::default();
    let us = time(|| {
        std::hint::black_box(evaluate(&config, &req, std::hint::black_box(&resp)).unwrap());
    });
    println!("quality: {us:.2} µs per 2 KB answer");
}

#[test]
fn everyday_answers_pass() {
    let cases: &[(&str, &str)] = &[
        (
            "Compare PostgreSQL and MySQL for a new web application",
            "| Feature | PostgreSQL | MySQL |\n|---|---|---|\n| JSON | jsonb, indexed | JSON type |\n| Replication | logical and streaming | binlog based |\n| Licence | PostgreSQL licence | GPL |\n\nFor a new web application, PostgreSQL is usually the safer default.",
        ),
        (
            "Give me pros and cons of remote work",
            "**Pros**\n- No commute\n- Flexible hours\n- Fewer interruptions\n\n**Cons**\n- Isolation\n- Blurred boundaries\n- Harder onboarding",
        ),
        (
            "Wie funktioniert ein Kühlschrank?",
            "Ein Kühlschrank pumpt Wärme aus dem Innenraum nach außen. Ein Kältemittel verdampft im Inneren und nimmt dabei Wärme auf; der Kompressor verdichtet es, und im Verflüssiger an der Rückseite gibt es die Wärme wieder ab.",
        ),
        (
            "Write a Python function that reverses a string",
            "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```",
        ),
        (
            "Write a Python function that reverses a string",
            "Here you go:\n\n```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```\n\nSlicing with a step of -1 walks the string backwards.",
        ),
        (
            "List the numbers from 1 to 30",
            &(1..=30)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("Repeat 'hello' ten times", &"hello ".repeat(10)),
        (
            "Translate 'thank you' into Japanese",
            "ありがとう (arigatou)",
        ),
        ("What's 2+2?", "4"),
        (
            "Summarise the plot of Hamlet in two sentences",
            "Prince Hamlet seeks revenge on his uncle Claudius, who murdered Hamlet's father to seize the throne and marry his mother. His hesitation and feigned madness lead to a chain of deaths, including his own",
        ),
        (
            "Explain recursion",
            "Recursion is when a function calls itself to solve a smaller instance of the same problem, until it reaches a base case that it can answer directly. For example, factorial(n) is n × factorial(n − 1), with factorial(0) = 1. Each call waits for the one it made, so the calls stack up and then unwind as the results return. Without a base case the recursion never ends and the stack overflows. Let me know if you want an example in a specific language",
        ),
    ];
    for (p, a) in cases {
        let v = judge(p, a, "stop");
        assert!(v.pass && v.score > 0.6, "{a}: {v:?}");
    }
}
