//! OTLP/HTTP in protobuf, encoded by hand: the handful of messages the gateway sends
//! (`opentelemetry/proto/{collector,trace,metrics,common,resource}/v1`), field numbers as in
//! the official `.proto` files. No protobuf crate: the encoder is a few dozen lines and adds
//! almost nothing to the wasm bundle.

/// A protobuf message being written.
#[derive(Default, Debug, Clone)]
pub struct Pb(pub Vec<u8>);

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

impl Pb {
    pub fn new() -> Self {
        Pb(Vec::new())
    }

    pub fn with_capacity(bytes: usize) -> Self {
        Pb(Vec::with_capacity(bytes))
    }

    fn varint(&mut self, mut v: u64) {
        if v < 0x80 {
            self.0.push(v as u8);
            return;
        }
        let (mut buf, mut n) = ([0u8; 10], 0);
        while v >= 0x80 {
            buf[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        self.0.extend_from_slice(&buf[..=n]);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    /// A varint field (uint32/uint64/int64/enum/bool), written even when 0.
    pub fn uint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    pub fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, I64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn double(&mut self, field: u32, v: f64) {
        self.fixed64(field, v.to_bits());
    }

    pub fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, I32);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    pub fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A nested message written by `f`, in place: a one-byte length is reserved and widened
    /// afterwards if the message turned out longer than 127 bytes (no temporary buffer).
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.push(0);
        f(self);
        let len = self.0.len() - at - 1;
        if len < 0x80 {
            self.0[at] = len as u8;
        } else {
            let mut prefix = Pb::new();
            prefix.varint(len as u64);
            self.0.splice(at..at + 1, prefix.0);
        }
    }

    /// `repeated fixed64` (packed, as proto3 writes it).
    pub fn packed_fixed64(&mut self, field: u32, values: impl ExactSizeIterator<Item = u64>) {
        self.key(field, LEN);
        self.varint(values.len() as u64 * 8);
        for v in values {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub fn packed_double(&mut self, field: u32, values: &[f64]) {
        self.packed_fixed64(field, values.iter().map(|v| v.to_bits()));
    }

    // -- common.v1 ------------------------------------------------------------------------

    /// A `KeyValue` attribute in repeated field `field`.
    pub fn attr(&mut self, field: u32, key: &str, value: Attr<'_>) {
        self.message(field, |kv| {
            kv.string(1, key);
            kv.message(2, |any| match value {
                Attr::Str(s) => any.string(1, s),
                Attr::Bool(b) => any.uint(2, u64::from(b)),
                Attr::Int(i) => any.int(3, i),
                Attr::Double(d) => any.double(4, d),
            });
        });
    }
}

/// An attribute value (`AnyValue`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attr<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// `Span.SpanKind.SPAN_KIND_SERVER`.
pub const SPAN_KIND_SERVER: u64 = 2;
/// `Status.StatusCode`.
pub const STATUS_ERROR: u64 = 2;
/// `AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA`.
pub const TEMPORALITY_DELTA: u64 = 1;
/// `SpanFlags`: the W3C trace flags plus whether the parent is remote.
pub const SPAN_FLAGS_HAS_IS_REMOTE: u32 = 0x100;
pub const SPAN_FLAGS_IS_REMOTE: u32 = 0x200;

/// Who is sending: the `Resource` and `InstrumentationScope` of every export.
pub struct Origin<'a> {
    pub service_name: &'a str,
    pub service_version: &'a str,
    pub instance_id: &'a str,
}

fn resource(pb: &mut Pb, origin: &Origin<'_>) {
    pb.message(1, |r| {
        r.attr(1, "service.name", Attr::Str(origin.service_name));
        r.attr(1, "service.version", Attr::Str(origin.service_version));
        r.attr(1, "service.instance.id", Attr::Str(origin.instance_id));
        r.attr(1, "telemetry.sdk.name", Attr::Str("edge-gateway"));
        r.attr(1, "telemetry.sdk.language", Attr::Str("rust"));
        r.attr(1, "telemetry.sdk.version", Attr::Str(origin.service_version));
    });
}

fn scope(pb: &mut Pb, origin: &Origin<'_>) {
    pb.message(1, |s| {
        s.string(1, "edge-gateway");
        s.string(2, origin.service_version);
    });
}

/// `ExportTraceServiceRequest` with one resource and scope around already-encoded `Span`s.
pub fn traces_request<'s>(origin: &Origin<'_>, spans: impl Iterator<Item = &'s [u8]> + Clone) -> Vec<u8> {
    let mut out = Pb::with_capacity(512 + spans.clone().map(|s| s.len() + 4).sum::<usize>());
    out.message(1, |rs| {
        resource(rs, origin);
        rs.message(2, |ss| {
            scope(ss, origin);
            for span in spans {
                ss.bytes(2, span);
            }
        });
    });
    out.0
}

/// `ExportMetricsServiceRequest` with one resource and scope around already-encoded `Metric`s.
pub fn metrics_request(origin: &Origin<'_>, metrics: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Pb::with_capacity(512 + metrics.iter().map(|m| m.len() + 4).sum::<usize>());
    out.message(1, |rm| {
        resource(rm, origin);
        rm.message(2, |sm| {
            scope(sm, origin);
            for metric in metrics {
                sm.bytes(2, metric);
            }
        });
    });
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_wire_types_like_protoc() {
        let mut pb = Pb::new();
        pb.uint(1, 150);
        assert_eq!(pb.0, [0x08, 0x96, 0x01]);
        let mut pb = Pb::new();
        pb.string(2, "testing");
        assert_eq!(pb.0, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        let mut pb = Pb::new();
        pb.fixed64(7, 1);
        assert_eq!(pb.0, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
        let mut pb = Pb::new();
        pb.fixed32(16, 0x301);
        assert_eq!(pb.0, [0x85, 0x01, 0x01, 0x03, 0, 0]);
        let mut pb = Pb::new();
        pb.int(3, -1);
        assert_eq!(pb.0.len(), 1 + 10, "negative int64 is a ten-byte varint");
        let mut pb = Pb::new();
        pb.packed_double(7, &[1.0]);
        assert_eq!(pb.0, [0x3a, 8, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
        let mut pb = Pb::new();
        pb.message(1, |m| m.bytes(2, &[7; 200]));
        assert_eq!(&pb.0[..5], [0x0a, 0xcb, 0x01, 0x12, 0xc8], "a two-byte length, widened in place");
        assert_eq!(pb.0.len(), 3 + 3 + 200);
        let mut pb = Pb::new();
        pb.attr(9, "k", Attr::Bool(false));
        // KeyValue{key: "k", value: AnyValue{bool_value: false}}: the oneof is written even when false.
        assert_eq!(pb.0, [0x4a, 7, 0x0a, 1, b'k', 0x12, 2, 0x10, 0]);
    }
}
