//! The prompt-injection heuristic: a small phrase grammar ("ignore all previous
//! instructions", ...) matched word by word over the text, with a first-word index.

// ---- prompt-injection heuristic -------------------------------------------------------

/// One slot of a phrase: any of `words` (ASCII case-insensitive), possibly skipped.
pub(super) struct Slot {
    pub(super) words: &'static [&'static str],
    pub(super) optional: bool,
}

pub(super) const fn req(words: &'static [&'static str]) -> Slot {
    Slot { words, optional: false }
}

pub(super) const fn opt(words: &'static [&'static str]) -> Slot {
    Slot { words, optional: true }
}

pub(super) const VERBS_IGNORE: &[&str] = &["ignore", "disregard", "forget", "override", "bypass", "skip"];

pub(super) const QUALIFIERS: &[&str] =
    &["previous", "prior", "above", "earlier", "preceding", "original", "initial", "system", "developer", "hidden"];

pub(super) const INSTRUCTIONS: &[&str] =
    &["instructions", "instruction", "prompt", "prompts", "rules", "directions", "guidelines", "message"];

/// Phrase ids and their word patterns. Words are runs of ASCII letters, digits and `'`;
/// anything else (spaces, punctuation, line breaks) separates them.
pub(super) const PHRASES: &[(&str, &[Slot])] = &[
    (
        "ignore_instructions",
        &[
            req(VERBS_IGNORE),
            opt(&["all", "any", "every"]),
            opt(&["of"]),
            opt(&["the", "your", "my", "these", "those", "our"]),
            req(QUALIFIERS),
            req(INSTRUCTIONS),
        ],
    ),
    ("ignore_everything_above", &[req(VERBS_IGNORE), req(&["everything", "anything"]), req(&["above", "before"])]),
    (
        "reveal_system_prompt",
        &[
            req(&[
                "reveal", "show", "print", "display", "repeat", "output", "tell", "leak", "dump", "give", "share",
                "expose",
            ]),
            opt(&["me", "us"]),
            opt(&["your", "the", "all", "its"]),
            opt(&["full", "entire", "complete", "exact", "original", "initial", "hidden", "secret"]),
            req(&["system", "hidden", "secret", "initial", "original"]),
            req(&["prompt", "prompts", "instructions", "message"]),
        ],
    ),
    ("dan", &[req(&["you", "you're", "youre"]), opt(&["are"]), opt(&["now"]), req(&["dan"])]),
    ("dan", &[req(&["do"]), req(&["anything"]), req(&["now"])]),
    ("jailbreak_mode", &[req(&["dan", "jailbreak", "jailbroken", "unrestricted"]), req(&["mode"])]),
    ("new_instructions", &[req(&["your"]), req(&["new"]), req(&["instructions", "rules"]), req(&["are"])]),
];

#[derive(Clone)]
pub(super) struct Words<'a> {
    pub(super) text: &'a str,
    pub(super) at: usize,
}

/// ASCII letters, digits and `'`.
pub(super) const WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'\'';
        c += 1;
    }
    table
};

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.text.as_bytes().get(self.at..)?;
        let start = rest.iter().position(|&c| WORD_BYTES[usize::from(c)])?;
        let len = rest[start..].iter().position(|&c| !WORD_BYTES[usize::from(c)]).unwrap_or(rest.len() - start);
        let word = self.text.get(self.at + start..self.at + start + len);
        self.at += start + len;
        word
    }
}

pub(super) fn matches_slots(slots: &[Slot], words: Words<'_>) -> bool {
    let Some((slot, rest)) = slots.split_first() else { return true };
    let mut next = words.clone();
    if next.next().is_some_and(|w| slot.words.iter().any(|s| s.eq_ignore_ascii_case(w))) && matches_slots(rest, next) {
        return true;
    }
    slot.optional && matches_slots(rest, words)
}

/// Bit `(letter - 'a') * 13 + length` set for each phrase's possible first words: most words
/// of a text are ruled out by one bit test before any string comparison.
pub(super) const FIRST_KEYS: [u64; 6] = {
    assert!(PHRASES.len() <= 32, "phrase sets are u32 bit sets");
    let mut keys = [0u64; 6];
    let mut p = 0;
    while p < PHRASES.len() {
        let words = PHRASES[p].1[0].words;
        let mut w = 0;
        while w < words.len() {
            let word = words[w].as_bytes();
            assert!(word.len() <= 12 && word[0].is_ascii_lowercase(), "first words: lowercase, at most 12 bytes");
            let bit = (word[0] - b'a') as usize * 13 + word.len();
            keys[bit / 64] |= 1 << (bit % 64);
            w += 1;
        }
        p += 1;
    }
    keys
};

/// Every phrase's possible first words, sorted, each with the bit set of its phrases.
pub(super) fn first_words() -> &'static [(&'static str, u32)] {
    static TABLE: std::sync::OnceLock<Vec<(&'static str, u32)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<(&'static str, u32)> = Vec::new();
        for (i, (_, slots)) in PHRASES.iter().enumerate() {
            for &word in slots[0].words {
                match table.binary_search_by(|(w, _)| w.cmp(&word)) {
                    Ok(at) => table[at].1 |= 1 << i,
                    Err(at) => table.insert(at, (word, 1 << i)),
                }
            }
        }
        table
    })
}

/// The id of the first injection phrase found in `text`, if any.
pub(super) fn injection(text: &str) -> Option<&'static str> {
    let mut words = Words { text, at: 0 };
    while let Some(word) = words.next() {
        let first = word.as_bytes()[0].to_ascii_lowercase();
        if word.len() > 12 || !first.is_ascii_lowercase() {
            continue;
        }
        let bit = usize::from(first - b'a') * 13 + word.len();
        if FIRST_KEYS[bit / 64] & (1 << (bit % 64)) == 0 {
            continue;
        }
        let mut buf = [0u8; 12];
        buf[..word.len()].copy_from_slice(word.as_bytes());
        buf.make_ascii_lowercase();
        let lowered = &buf[..word.len()];
        let table = first_words();
        let Ok(found) = table.binary_search_by(|(w, _)| w.as_bytes().cmp(lowered)) else { continue };
        let phrases = table[found].1;
        for (i, (id, slots)) in PHRASES.iter().enumerate() {
            if phrases & (1 << i) != 0 && matches_slots(&slots[1..], words.clone()) {
                return Some(id);
            }
        }
    }
    None
}
