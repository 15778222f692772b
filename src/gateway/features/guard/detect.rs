//! PII redaction: the detectors (`edge_scan::pii`: e-mail addresses, phone numbers, payment
//! cards, IBANs) plus custom regex rules; a text is rewritten (allocated) only when something
//! in it is found.

use std::collections::BTreeMap;

use crate::gateway::features::guard::rules::Redactor;
use edge_scan::pii::{find_cards, find_emails, find_ibans, find_phones};

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
