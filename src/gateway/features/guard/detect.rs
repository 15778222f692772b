//! PII redaction: the detectors (`edge_scan::pii`: e-mail addresses, phone numbers, payment
//! cards, IBANs) plus custom regex rules; a text is rewritten (allocated) only when something
//! in it is found.

use crate::gateway::features::guard::rules::Redactor;
use edge_scan::pii::{find_cards, find_emails, find_ibans, find_phones};

// ---- redaction -------------------------------------------------------------------------

/// Replaces every detected span in `text` with its placeholder, counting per rule. Allocates
/// only when something is found. Earlier redactors win overlaps: each redactor's spans are
/// merged into the sorted list of those kept so far in one pass, keeping a span only if it
/// overlaps none of its kept neighbours, so a text with many matches stays linear (a sorted Vec
/// with an insert per span was quadratic; an ordered map cost ~1,700 instructions a span).
pub(super) fn redact(redactors: &[Redactor], text: &mut String, counts: &mut Vec<(String, u32)>) {
    if redactors.is_empty() || text.is_empty() {
        return;
    }
    // (start, end, redactor index), sorted, never overlapping.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (index, redactor) in redactors.iter().enumerate() {
        found.clear();
        let mut add = |start: usize, end: usize| found.push((start, end));
        match redactor {
            Redactor::Email => find_emails(text, &mut add),
            Redactor::Phone => find_phones(text, &mut add),
            Redactor::Card => find_cards(text, &mut add),
            Redactor::Iban => find_ibans(text, &mut add),
            Redactor::Custom { regex, .. } => regex.for_each_match(text, &mut add),
        }
        if !found.is_empty() {
            found.sort_by_key(|&(start, _)| start); // stable: in order found for equal starts
            spans = merge(&spans, &found, index);
        }
    }
    if spans.is_empty() {
        return;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut per_rule = vec![0u32; redactors.len()];
    for &(start, end, index) in &spans {
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

/// `kept` plus those of `found` (sorted by start) that overlap nothing kept before them.
fn merge(kept: &[(usize, usize, usize)], found: &[(usize, usize)], index: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::with_capacity(kept.len() + found.len());
    if kept.is_empty() {
        // The usual case (one redactor finds something): only the found spans to keep apart,
        // without peeking at kept ones (~30 instructions a span).
        for &(start, end) in found {
            if out.last().is_none_or(|&(_, e, _)| e <= start) {
                out.push((start, end, index));
            }
        }
        return out;
    }
    let mut next = kept.iter().copied().peekable();
    for &(start, end) in found {
        while let Some(k) = next.next_if(|k| k.0 < start) {
            out.push(k);
        }
        let clear_before = out.last().is_none_or(|&(_, e, _)| e <= start);
        let clear_after = next.peek().is_none_or(|&(s, _, _)| s >= end);
        if clear_before && clear_after {
            out.push((start, end, index));
        }
    }
    out.extend(next);
    out
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merged_spans_keep_the_earlier_ones_and_touching_is_not_overlapping() {
        let kept = [(0, 5, 0), (10, 15, 0)];
        let found = [(3, 4), (5, 10), (9, 11), (12, 20), (20, 22), (21, 23)];
        assert_eq!(merge(&kept, &found, 1), vec![(0, 5, 0), (5, 10, 1), (10, 15, 0), (20, 22, 1)]);
        assert_eq!(merge(&[], &[(1, 2), (1, 3)], 2), vec![(1, 2, 2)]);
    }
}
