//! PII detectors: hand-written scanners for e-mail addresses, phone numbers, payment cards
//! (Luhn) and IBANs (mod-97). Each calls `add(start, end)` for every span it finds; the guard
//! decides what to do with them (redact, count).

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `local@domain.tld`: local part of `[A-Za-z0-9._%+-]`, a dotted domain, a TLD of 2+ letters.
pub fn find_emails(text: &str, add: &mut dyn FnMut(usize, usize)) {
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
type RunFn<'a> = dyn FnMut(usize, usize, &[(usize, usize)]) + 'a;

fn digit_runs(text: &str, seps: &[u8], f: &mut RunFn<'_>) {
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
/// few groups can end one, and each candidate's Luhn sum is one subtraction of prefix sums.
pub fn find_cards(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    // The run's Luhn prefix sums, reused across runs: `sums[k]` covers its first k digits,
    // `[0]` with the digits at even positions doubled, `[1]` with the odd ones doubled.
    let mut sums: Vec<[u32; 2]> = Vec::new();
    let mut digits_before: Vec<usize> = Vec::new();
    digit_runs(text, b" -", &mut |start, end, groups| {
        let total: usize = groups.iter().map(|(s, e)| e - s).sum();
        if total < 13 {
            return;
        }
        if total <= 19 && luhn(&b[start..end]) {
            add(start, end);
            return;
        }
        sums.clear();
        sums.push([0, 0]);
        for &c in groups.iter().flat_map(|&(s, e)| &b[s..e]) {
            let d = u32::from(c - b'0');
            let doubled = if d * 2 > 9 { d * 2 - 9 } else { d * 2 };
            let [even, odd] = sums[sums.len() - 1];
            let at_even = (sums.len() - 1).is_multiple_of(2);
            sums.push(if at_even { [even + doubled, odd + d] } else { [even + d, odd + doubled] });
        }
        // Luhn doubles every second digit counting back from the last one (which is not).
        let luhn_of = |from: usize, to: usize| {
            let doubled_odd = (to - 1).is_multiple_of(2);
            let k = usize::from(doubled_odd);
            (sums[to][k] - sums[from][k]).is_multiple_of(10)
        };
        // Longest group-aligned sub-run that is a valid card number (the first one wins ties).
        // `digits_before[g]`: digits in the groups before group g. From each start group only
        // the end groups giving more digits than the best so far (and 13..=19) are tried; that
        // range only moves right as the start does.
        digits_before.clear();
        digits_before.push(0);
        for &(s, e) in groups.iter() {
            digits_before.push(digits_before[digits_before.len() - 1] + (e - s));
        }
        let whole = (0, groups.len() - 1);
        let mut best: Option<(usize, usize, usize)> = None; // (start group, end group, digits)
        let mut first_end = 0;
        for from in 0..groups.len() {
            let need = best.map_or(13, |(_, _, n)| n + 1);
            if need > 19 {
                break;
            }
            let digits_to = |to: usize| digits_before[to + 1] - digits_before[from];
            first_end = first_end.max(from);
            while first_end < groups.len() && digits_to(first_end) < need {
                first_end += 1;
            }
            for to in (first_end..groups.len()).take_while(|&to| digits_to(to) <= 19) {
                if (from, to) != whole && luhn_of(digits_before[from], digits_before[to + 1]) {
                    best = Some((from, to, digits_to(to)));
                }
            }
        }
        let best = best.map(|(from, to, n)| (groups[from].0, groups[to].1, n));
        if let Some((s, e, _)) = best {
            add(s, e);
        }
    });
}

fn luhn(digits: &[u8]) -> bool {
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
pub fn find_phones(text: &str, add: &mut dyn FnMut(usize, usize)) {
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
fn looks_like_date(s: &[u8]) -> bool {
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
pub fn find_ibans(text: &str, add: &mut dyn FnMut(usize, usize)) {
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

fn iban_valid(iban: &[u8]) -> bool {
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
fn iban_length(country: [u8; 2]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix-sum search finds what checking each candidate with `luhn` finds.
    #[test]
    fn card_search_matches_checking_every_candidate() {
        let reference = |text: &str| {
            let b = text.as_bytes();
            let mut found = Vec::new();
            digit_runs(text, b" -", &mut |start, end, groups| {
                let total: usize = groups.iter().map(|(s, e)| e - s).sum();
                if total < 13 {
                    return;
                }
                if total <= 19 && luhn(&b[start..end]) {
                    found.push((start, end));
                    return;
                }
                let mut best: Option<(usize, usize, usize)> = None;
                for (i, &(s, _)) in groups.iter().enumerate() {
                    let mut digits = 0;
                    for &(gs, e) in &groups[i..] {
                        digits += e - gs;
                        if digits > 19 {
                            break;
                        }
                        if digits >= 13
                            && best.is_none_or(|(_, _, n)| n < digits)
                            && (s, e) != (start, end)
                            && luhn(&b[s..e])
                        {
                            best = Some((s, e, digits));
                        }
                    }
                }
                found.extend(best.map(|(s, e, _)| (s, e)));
            });
            found
        };
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..next(12) + 1 {
                for _ in 0..next(6) + 1 {
                    text.push(char::from(b'0' + next(10) as u8));
                }
                text.push(*[' ', '-', ' ', 'x'].get(next(4) as usize).unwrap_or(&' '));
            }
            let mut found = Vec::new();
            find_cards(&text, &mut |s, e| found.push((s, e)));
            assert_eq!(found, reference(&text), "{text}");
        }
        let mut found = Vec::new();
        find_cards("card 4111 1111 1111 1111 123 ok", &mut |s, e| found.push((s, e)));
        assert_eq!(found, vec![(5, 24)]);
    }
}
