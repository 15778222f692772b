//! PII redaction: hand-written scanners for e-mail addresses, phone numbers, payment cards
//! (Luhn) and IBANs (mod-97), plus custom regex rules; a text is rewritten (allocated) only
//! when something in it is found.

use std::collections::BTreeMap;

use crate::gateway::features::guard::rules::Redactor;

// ---- redaction -------------------------------------------------------------------------

/// Replaces every detected span in `text` with its placeholder, counting per rule. Allocates
/// only when something is found. Spans are kept in an ordered map: checking a new span
/// against the earlier ones and inserting it cost O(log n), so a text with many matches stays
/// O(n log n) (a sorted Vec made that quadratic).
pub(super) fn redact(redactors: &[Redactor], text: &mut String, counts: &mut Vec<(String, u32)>) {
    if redactors.is_empty() || text.is_empty() {
        return;
    }
    // start → (end, redactor index); spans never overlap, so ends increase with starts.
    let mut spans: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (index, redactor) in redactors.iter().enumerate() {
        let mut add = |start: usize, end: usize| {
            // The only earlier span that can overlap [start, end) is the last one starting
            // before `end`.
            let overlaps = spans.range(..end).next_back().is_some_and(|(_, &(e, _))| e > start);
            if !overlaps {
                spans.insert(start, (end, index));
            }
        };
        match redactor {
            Redactor::Email => find_emails(text, &mut add),
            Redactor::Phone => find_phones(text, &mut add),
            Redactor::Card => find_cards(text, &mut add),
            Redactor::Iban => find_ibans(text, &mut add),
            Redactor::Custom { regex, .. } if regex.may_match(text) => {
                for m in regex.regex.find_iter(text).filter(|m| !m.is_empty()) {
                    add(m.start(), m.end());
                }
            }
            Redactor::Custom { .. } => {}
        }
    }
    if spans.is_empty() {
        return;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut per_rule = vec![0u32; redactors.len()];
    for (&start, &(end, index)) in &spans {
        out.push_str(&text[at..start]);
        out.push_str(redactors[index].placeholder());
        at = end;
        per_rule[index] = per_rule[index].saturating_add(1);
    }
    out.push_str(&text[at..]);
    *text = out;
    for (redactor, n) in redactors.iter().zip(per_rule).filter(|(_, n)| *n > 0) {
        match counts.binary_search_by(|(id, _)| id.as_str().cmp(redactor.id())) {
            Ok(i) => counts[i].1 = counts[i].1.saturating_add(n),
            Err(i) => counts.insert(i, (redactor.id().to_string(), n)),
        }
    }
}

pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `local@domain.tld`: local part of `[A-Za-z0-9._%+-]`, a dotted domain, a TLD of 2+ letters.
pub(super) fn find_emails(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let domain = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-');
    let mut from = 0;
    while let Some(offset) = b[from..].iter().position(|&c| c == b'@') {
        let at = from + offset;
        from = at + 1;
        let mut start = at;
        while start > 0 && local(b[start - 1]) && at - start < 64 {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < b.len() && domain(b[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == at || end == at + 1 {
            continue;
        }
        let host = &text[at + 1..end];
        let valid = host.contains('.')
            && host.split('.').all(|label| !label.is_empty() && !label.starts_with('-'))
            && host
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()));
        if valid {
            add(start, end);
            from = end;
        }
    }
}

/// Runs of digits with single separators from `seps` between them, starting at a boundary
/// (not glued to a word or a number). Calls `f(start, end, digits)` for each run.
/// Called with a run's start, end and digit groups.
pub(super) type RunFn<'a> = dyn FnMut(usize, usize, &[(usize, usize)]) + 'a;

pub(super) fn digit_runs(text: &str, seps: &[u8], f: &mut RunFn<'_>) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut groups: Vec<(usize, usize)> = Vec::new();
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (is_word(b[i - 1]) || b[i - 1] == b'.' || b[i - 1] == b',')) {
            i += 1;
            continue;
        }
        groups.clear();
        let start = i;
        let mut end;
        loop {
            let group_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((group_start, i));
            end = i;
            if i + 1 < b.len() && seps.contains(&b[i]) && b[i + 1].is_ascii_digit() {
                i += 1;
                continue;
            }
            break;
        }
        let glued = end < b.len() && is_word(b[end]);
        if !glued {
            f(start, end, &groups);
        }
        i = end + 1;
    }
}

/// Card numbers: 13-19 digits, spaces or dashes allowed between digits, passing Luhn. A
/// longer run is searched for a valid number aligned on its groups (e.g. followed by a CVV).
/// Linear in the run: a candidate holds at most 19 digits, so from each group only the next
/// few groups can end one, and each candidate's Luhn sum covers at most 19 digits.
pub(super) fn find_cards(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    digit_runs(text, b" -", &mut |start, end, groups| {
        let total: usize = groups.iter().map(|(s, e)| e - s).sum();
        if total < 13 {
            return;
        }
        if total <= 19 && luhn(&b[start..end]) {
            add(start, end);
            return;
        }
        // Longest group-aligned sub-run that is a valid card number (the first one wins ties).
        let mut best: Option<(usize, usize, usize)> = None; // (start, end, digits)
        for (i, &(s, _)) in groups.iter().enumerate() {
            let mut digits = 0;
            for &(gs, e) in &groups[i..] {
                digits += e - gs;
                if digits > 19 {
                    break;
                }
                if digits >= 13 && best.is_none_or(|(_, _, n)| n < digits) && (s, e) != (start, end) && luhn(&b[s..e]) {
                    best = Some((s, e, digits));
                }
            }
        }
        if let Some((s, e, _)) = best {
            add(s, e);
        }
    });
}

pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &c in digits.iter().rev().filter(|c| c.is_ascii_digit()) {
        let mut d = u32::from(c - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// Phone numbers: `+` and 8-15 digits (E.164), or 10-12 digits written with separators
/// (`(555) 123-4567`, `020 7946 0958`). Plain digit runs without `+` are left alone (ids,
/// timestamps), and so are dates (`2024-01-15 10`).
pub(super) fn find_phones(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let opens = c.is_ascii_digit() || (matches!(c, b'+' | b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !opens || (i > 0 && (is_word(b[i - 1]) || matches!(b[i - 1], b'.' | b',' | b'-' | b'+' | b'/' | b'@'))) {
            i += 1;
            continue;
        }
        let start = i;
        let plus = c == b'+';
        let mut j = if matches!(c, b'+' | b'(') { i + 1 } else { i };
        let (mut digits, mut groups, mut group, mut longest) = (0, 0, 0, 0);
        let mut dotted = false;
        let mut last_digit = j;
        let mut pending_seps = 0;
        while j < b.len() {
            match b[j] {
                d if d.is_ascii_digit() => {
                    digits += 1;
                    if group == 0 {
                        groups += 1;
                    }
                    group += 1;
                    longest = longest.max(group);
                    last_digit = j + 1;
                    pending_seps = 0;
                }
                sep @ (b' ' | b'-' | b'.' | b'(' | b')') if pending_seps < 2 => {
                    dotted |= sep == b'.';
                    group = 0;
                    pending_seps += 1;
                }
                _ => break,
            }
            j += 1;
        }
        let end = last_digit;
        let glued = end < b.len() && (is_word(b[end]) || b[end] == b'@');
        // Without `+`: several groups of plausible size (`3.14159265358` is a number, not a phone).
        let grouped = groups >= 2 && longest <= if dotted { 4 } else { 8 };
        let ok = !glued
            && if plus { (8..=15).contains(&digits) } else { grouped && (10..=12).contains(&digits) }
            && !looks_like_date(&b[start..end]);
        if ok {
            add(start, end);
        }
        i = end.max(i + 1);
    }
}

/// `YYYY-MM-DD...`, `DD.MM.YYYY...` and friends (with `-`, `.` or `/`).
pub(super) fn looks_like_date(s: &[u8]) -> bool {
    let shape = |pattern: &[u8]| {
        s.len() >= pattern.len()
            && s.iter().zip(pattern).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                _ => matches!(c, b'-' | b'.' | b'/'),
            })
    };
    shape(b"9999-99-99") || shape(b"99-99-9999")
}

/// IBANs (ISO 13616): country code, check digits and the country's exact length, written
/// compact or in groups of four, passing the mod-97 check.
pub(super) fn find_ibans(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let candidate = (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && b[i].is_ascii_alphabetic()
            && b[i + 1].is_ascii_alphabetic()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit();
        if !candidate {
            i += 1;
            continue;
        }
        let country = [b[i].to_ascii_uppercase(), b[i + 1].to_ascii_uppercase()];
        let Some(len) = iban_length(country) else {
            i += 1;
            continue;
        };
        // Collect `len` alphanumerics; a single space is allowed between groups of four.
        let mut chars = [0u8; 34];
        let mut n = 0;
        let mut j = i;
        while n < len && j < b.len() {
            if b[j].is_ascii_alphanumeric() {
                chars[n] = b[j].to_ascii_uppercase();
                n += 1;
                j += 1;
            } else if b[j] == b' '
                && n.is_multiple_of(4)
                && n > 0
                && b.get(j + 1).is_some_and(u8::is_ascii_alphanumeric)
            {
                j += 1;
            } else {
                break;
            }
        }
        let ends = j == b.len() || !b[j].is_ascii_alphanumeric();
        if n == len && ends && iban_valid(&chars[..len]) {
            add(i, j);
            i = j;
        } else {
            i += 1;
        }
    }
}

pub(super) fn iban_valid(iban: &[u8]) -> bool {
    let mut r = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        r = match c {
            b'0'..=b'9' => (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    r == 1
}

/// IBAN lengths of the countries in the SWIFT IBAN registry: country code, two-digit length.
pub(super) fn iban_length(country: [u8; 2]) -> Option<usize> {
    const LENGTHS: &str = concat!(
        "AD24AE23AL28AT20AZ28BA20BE16BG22BH22BI27BR29BY28CH21CR22CY28CZ24DE22DJ27DK18DO28EE20EG29ES24FI18",
        "FK18FO18FR27GB22GE22GI23GL18GR27GT28HN28HR21HU28IE22IL23IQ23IS26IT27JO30KW30KZ20LB28LC32LI21LT20",
        "LU20LV21LY25MC27MD24ME22MK19MN20MR27MT31MU30NI28NL18NO15OM23PK24PL28PS29PT25QA29RO24RS22RU33SA24",
        "SC31SD18SE24SI19SK24SM27SO23ST25SV28TL23TN24TR26UA29VA22VG24XK20YE30",
    );
    LENGTHS
        .as_bytes()
        .chunks_exact(4)
        .find(|e| e[..2] == country)
        .map(|e| usize::from(e[2] - b'0') * 10 + usize::from(e[3] - b'0'))
}
