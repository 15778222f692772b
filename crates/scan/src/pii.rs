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
    while let Some(offset) = memchr::memchr(b'@', &b[from..]) {
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
        if is_mail_host(&b[at + 1..end]) {
            add(start, end);
            from = end;
        }
    }
}

/// Whether `host` is dotted labels, none empty nor starting with `-`, the last (the TLD) of
/// two or more letters. One pass: splitting it as `str`s cost ~250 instructions an address.
fn is_mail_host(host: &[u8]) -> bool {
    let (mut label, mut dotted) = (0, false);
    for (i, &c) in host.iter().enumerate() {
        if c == b'.' {
            if i == label {
                return false;
            }
            (label, dotted) = (i + 1, true);
        } else if i == label && c == b'-' {
            return false;
        }
    }
    let tld = &host[label..];
    dotted && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

const LOW: u64 = 0x0101_0101_0101_0101;

/// Bit 7 of each byte of `x` that is an ASCII byte in `lo..=hi` (`hi` below 0x80), the others
/// clear. Per byte, no carries between bytes: bit 7 of `0x80 + hi - m` is set for m <= hi, of
/// `m + 0x80 - lo` for m >= lo, and of `!x` for ASCII.
fn bytes_in(x: u64, lo: u8, hi: u8) -> u64 {
    let m = x & (LOW * 0x7F);
    (LOW * (0x80 + u64::from(hi)) - m) & (m + LOW * (0x80 - u64::from(lo))) & !x & (LOW * 0x80)
}

/// Eight bytes of `b` from `at` as one integer, the first in the low byte.
fn word8(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).and_then(|w| w.try_into().ok()).map(u64::from_le_bytes)
}

/// The index of the first ASCII digit in `b` at or after `from`, eight bytes at a time (most
/// text has few digits, and the PII scanners start only at or next to one).
fn next_digit(b: &[u8], mut from: usize) -> Option<usize> {
    while let Some(x) = word8(b, from) {
        let digits = bytes_in(x, b'0', b'9');
        if digits != 0 {
            return Some(from + (digits.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    b.get(from..)?.iter().position(u8::is_ascii_digit).map(|p| from + p)
}

/// Card numbers: 13-19 digits, spaces or dashes allowed between digits, passing Luhn. A
/// longer run is searched for a valid number aligned on its groups (e.g. followed by a CVV):
/// the longest, the first one on ties. Runs are digits with single separators from ` -`
/// between them, starting at a boundary (not glued to a word or a number), and count only when
/// they do not end glued to a word.
pub fn find_cards(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = next_digit(b, i) {
        i = at;
        if i > 0 && (is_word(b[i - 1]) || b[i - 1] == b'.' || b[i - 1] == b',') {
            i += 1;
            continue;
        }
        // Runs of fewer than 13 digits (most) are only read to their end; longer ones are read
        // to their end by the search.
        let start = i;
        let mut digits = 0;
        loop {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                digits += 1;
            }
            if digits < 13 && i + 1 < b.len() && matches!(b[i], b' ' | b'-') && b[i + 1].is_ascii_digit() {
                i += 1;
                continue;
            }
            break;
        }
        if digits >= 13 {
            let best;
            (i, best) = longest_card(b, start);
            if let Some((s, e)) = best.filter(|_| !(i < b.len() && is_word(b[i]))) {
                add(s, e);
            }
        }
        i += 1;
    }
}

/// The Luhn sums after one more digit `d`, at `(next << 4 | other) << 4 | d` (the sums as in
/// `longest_card`): the digit's position gets it doubled, and the two sums swap roles.
static LUHN_STEP: [u8; 256 * 16] = {
    let mut table = [0; 256 * 16];
    let mut i = 0;
    while i < table.len() {
        let (next, other, d) = ((i >> 8) as u8, (i >> 4) as u8 & 15, i as u8 & 15);
        let doubled = if d > 4 { d * 2 - 9 } else { d * 2 };
        table[i] = (((other + d) % 10) << 4) | ((next + doubled) % 10);
        i += 1;
    }
    table
};

/// Group starts kept: a candidate spans at most 19 digits, so at most 20 starts back.
const RING: usize = 32;

/// The end of the digit run at `start`, and its longest group-aligned part of 13..=19 digits
/// passing Luhn (the first on ties). One pass over its groups, O(1) each (the search this
/// replaced tried ~7 candidates per group, ~220 instructions): the part from a group start to the
/// current end passes iff the Luhn sums (mod 10) up to both are equal, for the parity of
/// digits the end doubles. So for each parity and sum only the latest group start a part
/// longer than the best so far can begin at is kept, and a part exists iff that one is at most
/// 19 digits back; only then are the group starts searched, for the earliest. Each search
/// finds a longer best, so a run has at most 7.
fn longest_card(b: &[u8], start: usize) -> (usize, Option<(usize, usize)>) {
    // Each group start as `digits before << 8 | sums[1] << 4 | sums[0]`, the sums of the
    // digits before it with those at even (`[0]`) or odd (`[1]`) positions doubled.
    let mut starts = [0u64; RING];
    let sum = |e: u64, k: u64| usize::from((e >> (4 * k)) as u8 & 15);
    let digits_before = |e: u64| e >> 8;
    // `latest[k][r]`: the digits before the latest of the group starts below `eligible` with
    // `sums[k] == r`, plus 20 (0: none); a part from it is at most 19 digits iff that exceeds
    // the digits so far.
    let mut latest = [[0u64; 16]; 2];
    let (mut groups, mut eligible) = (0, 0);
    let mut need = 13; // digits a part must have to beat the best
    let mut best = None;
    // The sums so far as `next << 4 | other`: `next` doubles the next digit's position.
    let (mut digits, mut state) = (0u64, 0u8);
    let mut i = start;
    loop {
        // `[0]` (even positions doubled) is `next` when the next position is even.
        let sums = if digits & 1 == 0 { state.rotate_left(4) } else { state };
        starts[groups % RING] = digits << 8 | u64::from(sums);
        groups += 1;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10) {
            state = LUHN_STEP[usize::from(state) << 4 | usize::from(d)];
            digits += 1;
            i += 1;
        }
        while eligible < groups && digits_before(starts[eligible % RING]) + need <= digits {
            let e = starts[eligible % RING];
            latest[0][sum(e, 0)] = digits_before(e) + 20;
            latest[1][sum(e, 1)] = digits_before(e) + 20;
            eligible += 1;
        }
        // Luhn doubles every second digit counting back from the last one (which is not): the
        // positions of the next digit's parity, whose sum is `next`.
        let k = digits & 1;
        let next = usize::from(state >> 4);
        if latest[k as usize][next] > digits {
            // The eligible group starts at most 19 digits back, latest first.
            let window = |eligible: usize| {
                (eligible.saturating_sub(RING)..eligible)
                    .rev()
                    .map(|g| starts[g % RING])
                    .take_while(|&e| digits_before(e) + 19 >= digits)
            };
            // The earliest match is the longest.
            if let Some(e) = window(eligible).filter(|&e| sum(e, k) == next).last() {
                let len = digits - digits_before(e);
                need = len + 1;
                while eligible > 0 && digits_before(starts[(eligible - 1) % RING]) + need > digits {
                    eligible -= 1;
                }
                // Those left eligible, latest first (earlier ones lie beyond 19 digits).
                latest = [[0; 16]; 2];
                for e in window(eligible) {
                    for k in 0..2 {
                        let slot = &mut latest[k as usize][sum(e, k)];
                        if *slot == 0 {
                            *slot = digits_before(e) + 20;
                        }
                    }
                }
                // The part's first digit: `len` digits back.
                let mut from = i;
                let mut left = len;
                while left > 0 {
                    from -= 1;
                    left -= u64::from(b[from].is_ascii_digit());
                }
                best = Some((from, i));
            }
        }
        if i + 1 < b.len() && matches!(b[i], b' ' | b'-') && b[i + 1].is_ascii_digit() {
            i += 1; // the separator
            continue;
        }
        return (i, best);
    }
}

/// Phone numbers: `+` and 8-15 digits (E.164), or 10-12 digits written with separators
/// (`(555) 123-4567`, `020 7946 0958`). Plain digit runs without `+` are left alone (ids,
/// timestamps), and so are dates (`2024-01-15 10`).
pub fn find_phones(text: &str, add: &mut dyn FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Only a digit, or a `+` or `(` before one, opens a number: skip to the next digit.
        let Some(digit) = next_digit(b, i) else { break };
        i = if digit > i && matches!(b[digit - 1], b'+' | b'(') { digit - 1 } else { digit };
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
                    if digits > 15 {
                        j += 1;
                        break;
                    }
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
        // More digits than any phone number has: only where the number ends matters now (it
        // can run through a whole text of digit groups).
        while digits > 15 && j < b.len() {
            // Eight bytes at once while all are digits or separators, with no three separators
            // in a row (nor across the last eight).
            if let Some(x) = word8(b, j) {
                let d = bytes_in(x, b'0', b'9');
                let s = bytes_in(x, b' ', b' ') | bytes_in(x, b'(', b')') | bytes_in(x, b'-', b'.');
                let three = s & (s >> 8) & (s >> 16);
                let (before, after) = ((d.trailing_zeros() / 8) as usize, (d.leading_zeros() / 8) as usize);
                if d | s == LOW * 0x80 && d != 0 && three == 0 && pending_seps + before <= 2 {
                    last_digit = j + 8 - after;
                    pending_seps = after;
                    j += 8;
                    continue;
                }
            }
            if b[j].is_ascii_digit() {
                last_digit = j + 1;
                pending_seps = 0;
            } else if PHONE_SEPARATORS[usize::from(b[j])] && pending_seps < 2 {
                pending_seps += 1;
            } else {
                break;
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

/// The bytes a phone number may have between its digits.
static PHONE_SEPARATORS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 5 {
        table[b" -.()"[i] as usize] = true;
        i += 1;
    }
    table
};

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
        // A candidate begins with two letters and two digits: the places where it can are
        // found five at a time from eight bytes (most text has no such place).
        if let Some(x) = word8(b, i) {
            let (letters, digits) = (bytes_in(x | (LOW * 0x20), b'a', b'z'), bytes_in(x, b'0', b'9'));
            let places = letters & (letters >> 8) & (digits >> 16) & (digits >> 24) & ((LOW * 0x80) >> 24);
            if places == 0 {
                // With no digit in the eight bytes, the next place is two before the next digit.
                i = if digits == 0 { next_digit(b, i + 8).map_or(b.len(), |d| d - 2) } else { i + 5 };
                continue;
            }
            i += (places.trailing_zeros() / 8) as usize;
        }
        match iban_at(b, i) {
            Some(end) => {
                add(i, end);
                i = end;
            }
            None => i += 1,
        }
    }
}

/// The end of the IBAN that starts at `i` (`i + 4 <= b.len()`), if one does: at a word's
/// start two letters of a known country and two digits, then its length in alphanumerics with
/// single spaces allowed between groups of four, then no alphanumeric, and a valid checksum.
fn iban_at(b: &[u8], i: usize) -> Option<usize> {
    let candidate = (i == 0 || !b[i - 1].is_ascii_alphanumeric())
        && b[i].is_ascii_alphabetic()
        && b[i + 1].is_ascii_alphabetic()
        && b[i + 2].is_ascii_digit()
        && b[i + 3].is_ascii_digit();
    if !candidate {
        return None;
    }
    let len = iban_length([b[i].to_ascii_uppercase(), b[i + 1].to_ascii_uppercase()])?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut j = i;
    while n < len && j < b.len() {
        if b[j].is_ascii_alphanumeric() {
            chars[n] = b[j].to_ascii_uppercase();
            n += 1;
            j += 1;
        } else if b[j] == b' ' && n.is_multiple_of(4) && n > 0 && b.get(j + 1).is_some_and(u8::is_ascii_alphanumeric) {
            j += 1;
        } else {
            break;
        }
    }
    let ends = j == b.len() || !b[j].is_ascii_alphanumeric();
    (n == len && ends && iban_valid(&chars[..len])).then_some(j)
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

    /// The host check as it was, over `str` splits.
    fn is_mail_host_by_splits(host: &str) -> bool {
        host.contains('.')
            && host.split('.').all(|label| !label.is_empty() && !label.starts_with('-'))
            && host.rsplit('.').next().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()))
    }

    #[test]
    fn mail_hosts_are_checked_as_the_splits_checked_them() {
        // Every host of up to 7 bytes over the bytes that decide it.
        let alphabet = b"a1.-";
        let mut valid = 0;
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let host: String = (0..len).map(|k| char::from(alphabet[n / 4usize.pow(k) % 4])).collect();
                assert_eq!(is_mail_host(host.as_bytes()), is_mail_host_by_splits(&host), "{host:?}");
                valid += usize::from(is_mail_host(host.as_bytes()));
            }
        }
        assert!(valid > 100, "{valid}");
    }

    #[test]
    fn next_digit_finds_what_a_byte_loop_finds() {
        let mut next = crate::test_rng(7);
        let alphabet = [b'0', b'9', b'/', b':', b'a', b' ', 0xB0, 0xB9, 0x30 | 0x80, 0xFF];
        for _ in 0..5000 {
            let text: Vec<u8> =
                (0..next(40)).map(|_| if next(8) == 0 { alphabet[next(4)] } else { alphabet[4 + next(6)] }).collect();
            let from = next(text.len() + 2);
            let expected = text.get(from..).and_then(|t| t.iter().position(u8::is_ascii_digit)).map(|p| from + p);
            assert_eq!(next_digit(&text, from), expected, "{text:?} from {from}");
        }
    }

    /// The phone scan as it was before it skipped to digits.
    fn phones_byte_by_byte(text: &str, add: &mut dyn FnMut(usize, usize)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let opens =
                c.is_ascii_digit() || (matches!(c, b'+' | b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
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

    /// The IBAN scan as it was before it skipped to digits: every byte tried.
    fn ibans_byte_by_byte(text: &str, add: &mut dyn FnMut(usize, usize)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i + 4 <= b.len() {
            match iban_at(b, i) {
                Some(end) => {
                    add(i, end);
                    i = end;
                }
                None => i += 1,
            }
        }
    }

    /// Skipping to the next digit finds what trying every byte found: random texts of digits,
    /// separators, letters and the bytes phone numbers and IBANs start or end at, with real
    /// ones mixed in.
    #[test]
    fn phone_and_iban_scans_match_trying_every_byte() {
        let mut next = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        let pieces = [
            "1",
            "7",
            "0",
            "42",
            " ",
            "-",
            ".",
            "(",
            ")",
            "+",
            "/",
            "@",
            ",",
            "a",
            "DE",
            "gb",
            "x",
            "\n",
            "é",
            "+44 20 7946 0958",
            "(555) 123-4567",
            "020 7946 0958",
            "2024-01-15 10",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "de89370400440532013000",
            "1-2 ",
            "4111 1111 1111 1111",
        ];
        let (mut phones, mut ibans) = (0, 0);
        for _ in 0..20_000 {
            let text: String = (0..next(30)).map(|_| pieces[next(pieces.len())]).collect();
            for (scan, old, n) in [
                (
                    find_phones as fn(&str, &mut dyn FnMut(usize, usize)),
                    phones_byte_by_byte as fn(&str, &mut dyn FnMut(usize, usize)),
                    &mut phones,
                ),
                (find_ibans, ibans_byte_by_byte, &mut ibans),
            ] {
                let (mut found, mut expected) = (Vec::new(), Vec::new());
                scan(&text, &mut |s, e| found.push((s, e)));
                old(&text, &mut |s, e| expected.push((s, e)));
                assert_eq!(found, expected, "{text:?}");
                *n += found.len();
            }
        }
        let long = "1-2 ".repeat(5000);
        for (scan, old) in [
            (
                find_phones as fn(&str, &mut dyn FnMut(usize, usize)),
                phones_byte_by_byte as fn(&str, &mut dyn FnMut(usize, usize)),
            ),
            (find_ibans, ibans_byte_by_byte),
        ] {
            let (mut found, mut expected) = (Vec::new(), Vec::new());
            scan(&long, &mut |s, e| found.push((s, e)));
            old(&long, &mut |s, e| expected.push((s, e)));
            assert_eq!(found, expected);
        }
        assert!(phones > 2000 && ibans > 2000, "only {phones} phones and {ibans} IBANs found");
    }

    /// The splitting into runs the card search had before it read runs group by group:
    /// `f(start, end, groups)` for each run that is not glued to a word at its end.
    /// Called with a run's start, end and digit groups.
    type RunFn<'a> = dyn FnMut(usize, usize, &[(usize, usize)]) + 'a;

    fn digit_runs(text: &str, f: &mut RunFn<'_>) {
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
                if i + 1 < b.len() && b" -".contains(&b[i]) && b[i + 1].is_ascii_digit() {
                    i += 1;
                    continue;
                }
                break;
            }
            if !(end < b.len() && is_word(b[end])) {
                f(start, end, &groups);
            }
            i = end + 1;
        }
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

    /// Every candidate checked with `luhn`: the whole run if it is a valid card, else the
    /// longest valid group-aligned sub-run, the first on ties.
    fn cards_by_checking_every_candidate(text: &str) -> Vec<(usize, usize)> {
        let b = text.as_bytes();
        let mut found = Vec::new();
        digit_runs(text, &mut |start, end, groups| {
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
    }

    /// The one-pass search finds what checking every candidate finds: short random runs, long
    /// runs of short groups (one window after another), runs with cards of every length
    /// inside, and repeated digit patterns.
    #[test]
    fn card_search_matches_checking_every_candidate() {
        let mut next = crate::test_rng(0x2545_F491_4F6C_DD1Du64);
        let digit = |next: &mut dyn FnMut(usize) -> usize| char::from(b'0' + next(10) as u8);
        let mut texts = Vec::new();
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..next(12) + 1 {
                for _ in 0..next(6) + 1 {
                    text.push(digit(&mut next));
                }
                text.push(*[' ', '-', ' ', 'x'].get(next(4)).unwrap_or(&' '));
            }
            texts.push(text);
        }
        for _ in 0..2000 {
            let mut text = String::new();
            let max_group = [1, 2, 3, 4, 25][next(5)];
            for _ in 0..next(200) + 1 {
                for _ in 0..next(max_group) + 1 {
                    text.push(digit(&mut next));
                }
                text.push([' ', '-'][next(2)]);
                if next(150) == 0 {
                    text.push(['x', '.', ' '][next(3)]);
                }
            }
            texts.push(text);
        }
        for card in ["4111111111111", "4111111111111111", "4111111111111111113", "378282246310005"] {
            for _ in 0..200 {
                let mut text = String::new();
                for _ in 0..next(20) {
                    text.push(digit(&mut next));
                    text.push(' ');
                }
                for (n, c) in card.chars().enumerate() {
                    text.push(c);
                    if n % 4 == 3 && next(2) == 0 {
                        text.push([' ', '-'][next(2)]);
                    }
                }
                for _ in 0..next(20) {
                    text.push(['-', ' '][next(2)]);
                    text.push(digit(&mut next));
                }
                texts.push(text);
            }
        }
        for pattern in ["1-2 ", "1 ", "12 ", "7", "4111 1111 1111 1111 ", "0 5 "] {
            for n in [1, 5, 13, 40, 300] {
                texts.push(pattern.repeat(n));
            }
        }
        let mut cards = 0;
        for text in &texts {
            let mut found = Vec::new();
            find_cards(text, &mut |s, e| found.push((s, e)));
            cards += found.len();
            assert_eq!(found, cards_by_checking_every_candidate(text), "{text}");
        }
        assert!(cards > 2000, "only {cards} cards found");
        let mut found = Vec::new();
        find_cards("card 4111 1111 1111 1111 123 ok", &mut |s, e| found.push((s, e)));
        assert_eq!(found, vec![(5, 24)]);
    }
}
