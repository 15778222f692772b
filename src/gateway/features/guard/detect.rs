//! PII redaction: the detectors (`edge_scan::pii`: e-mail addresses, phone numbers, payment
//! cards, IBANs) plus custom regex rules; a text is rewritten (allocated) only when something
//! in it is found.

use crate::gateway::features::guard::rules::Redactor;
use crate::gateway::util::order;
use edge_scan::pii::{find_cards, find_emails, find_ibans, find_phones};
use edge_scan::spans::{self, Placeholders, Span};

// ---- redaction -------------------------------------------------------------------------

/// The redaction rules of one walk over a request or answer, with the span lists they fill
/// kept from one text to the next (a tool schema of 2,000 descriptions paid ~5 allocations a
/// description when each text had its own).
pub(super) struct Redaction<'g> {
    redactors: &'g [Redactor],
    placeholders: Placeholders<'g>,
    /// The spans kept so far in the current text (sorted, never overlapping), and the list the
    /// next merge writes (the two swap).
    kept: Vec<Span>,
    merged: Vec<Span>,
    /// One redactor's finds, `(start, end)`.
    found: Vec<(usize, usize)>,
    /// Spans replaced so far per redactor, over all texts: counted by id once, at the end
    /// (per text, the lookups cost ~300 instructions a redacted tool description).
    per_rule: Vec<u32>,
}

impl<'g> Redaction<'g> {
    pub(super) fn new(redactors: &'g [Redactor]) -> Redaction<'g> {
        Redaction {
            redactors,
            placeholders: Placeholders::new(redactors.iter().map(Redactor::placeholder).collect()),
            kept: Vec::new(),
            merged: Vec::new(),
            found: Vec::new(),
            per_rule: vec![0; redactors.len()],
        }
    }

    /// (rule id, spans replaced) over every text so far, sorted by id; rules that replaced
    /// nothing left out.
    pub(super) fn counts(&self) -> Vec<(String, u32)> {
        let mut counts: Vec<(String, u32)> = (self.redactors.iter().zip(&self.per_rule))
            .filter(|(_, n)| **n > 0)
            .map(|(redactor, &n)| (redactor.id().to_string(), n))
            .collect();
        order::sort(&mut counts);
        counts
    }

    /// Replaces every detected span in `text` with its placeholder, counting per rule (see
    /// [`Self::counts`]). Allocates only when something is found. Earlier redactors win overlaps: each
    /// redactor's spans are merged into the sorted list of those kept so far in one pass
    /// ([`spans::merge`]), so a text with many matches stays linear (a sorted Vec with an
    /// insert per span was quadratic; an ordered map cost ~1,700 instructions a span).
    pub(super) fn apply(&mut self, text: &mut String) {
        if self.redactors.is_empty() || text.is_empty() {
            return;
        }
        self.kept.clear();
        for (index, redactor) in self.redactors.iter().enumerate() {
            let found = &mut self.found;
            found.clear();
            let mut add = |start: usize, end: usize| found.push((start, end));
            match redactor {
                Redactor::Email => find_emails(text, &mut add),
                Redactor::Phone => find_phones(text, &mut add),
                Redactor::Card => find_cards(text, &mut add),
                Redactor::Iban => find_ibans(text, &mut add),
                Redactor::Custom { regex, .. } => regex.find_into(text, found),
            }
            if !found.is_empty() {
                found.sort_by_key(|&(start, _)| start); // stable: in order found for equal starts
                spans::merge(&self.kept, found, index, &mut self.merged);
                std::mem::swap(&mut self.kept, &mut self.merged);
            }
        }
        if self.kept.is_empty() {
            return;
        }
        *text = spans::replace(text, &self.kept, &self.placeholders);
        for &(_, _, index) in &self.kept {
            self.per_rule[index] = self.per_rule[index].saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Redaction;
    use crate::gateway::check::Issues;
    use crate::gateway::features::guard::rules::check;
    use serde_json::json;

    /// One `Redaction` kept across many texts (as a walk keeps it) redacts each as a fresh one
    /// does, and counts what they count together: nothing found in one text leaks into the
    /// next.
    #[test]
    fn a_redaction_reused_across_texts_is_a_fresh_one() {
        let mut issues = Issues::default();
        let config = json!({"redact": ["iban", "card", "email", "phone",
            {"id": "ticket", "pattern": "TCK-\\d+", "label": "TICKET"}, {"id": "digits", "pattern": "\\d+", "label": "N"}]});
        let g = check("guardrails", &config, &mut issues).unwrap();
        let pii = [
            "a@b.co",
            "555-123-4567",
            "+44 20 7946 0958",
            "TCK-12",
            "4111 1111 1111 1111",
            "DE89 3704 0044 0532 0130 00",
        ];
        let pieces = [&pii[..], &[" ", "x", "7", "é"]].concat();
        let mut rng = rng(7);
        let mut reused = Redaction::new(&g.redact);
        let mut fresh_counts = std::collections::BTreeMap::new();
        let mut redacted = 0;
        for _ in 0..2000 {
            let text: String = (0..rng(12)).map(|_| pieces[rng(pieces.len())]).collect();
            let (mut a, mut b) = (text.clone(), text.clone());
            reused.apply(&mut a);
            let mut fresh = Redaction::new(&g.redact);
            fresh.apply(&mut b);
            assert_eq!(a, b, "{text:?}");
            for (id, n) in fresh.counts() {
                *fresh_counts.entry(id).or_insert(0) += n;
            }
            redacted += usize::from(a != text);
        }
        assert!(redacted > 1000, "{redacted}");
        assert_eq!(reused.counts(), fresh_counts.into_iter().collect::<Vec<_>>());
        assert_eq!(reused.counts().len(), 6, "every rule found something: {:?}", reused.counts());
    }

    /// xorshift: `next(n)` is in `0..n`.
    fn rng(mut state: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        }
    }
}
