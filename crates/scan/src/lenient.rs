//! Reading a JSON value leniently, through serde without building a tree: a value of the
//! expected shape reads as such, any other as absent (or what the type says), the way
//! `Value::get(..).and_then(Value::as_str)` reads a tree. Used by the stream readers.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::like_last::{LikeNothing, Varying};
use crate::reader::whole_object;

/// A JSON value read as `Self` when it has the expected shape, else as what `other` says
/// (by default, absent). Arrays and objects of the wrong shape are skipped over.
pub(crate) trait Lenient<'de>: Sized + Default {
    fn other() -> Self {
        Self::default()
    }
    fn null() -> Self {
        Self::other()
    }
    fn string(_: Cow<'de, str>) -> Self {
        Self::other()
    }
    fn unsigned(_: u64) -> Self {
        Self::other()
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::other())
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::other())
    }
}

pub(crate) struct LenientVisitor<T>(pub(crate) PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::null())
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::unsigned(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::string(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::string(Cow::Owned(v.to_owned()))) // only strings with escapes come here
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

/// Implements `Deserialize` through [`Lenient`] for each type.
macro_rules! lenient_deserialize {
    ($($ty:ty),*) => {$(
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($crate::lenient::LenientVisitor(std::marker::PhantomData))
            }
        }
    )*};
}
pub(crate) use lenient_deserialize;

/// A string, else absent.
#[derive(Default)]
pub(crate) struct Str<'a>(pub(crate) Option<Cow<'a, str>>);

impl<'de> Lenient<'de> for Str<'de> {
    fn string(s: Cow<'de, str>) -> Self {
        Str(Some(s))
    }
}

impl Str<'_> {
    pub(crate) fn len(&self) -> usize {
        self.0.as_deref().map_or(0, str::len)
    }
}

/// A non-negative integer, else 0.
#[derive(Default)]
pub(crate) struct Count(pub(crate) u64);

impl Lenient<'_> for Count {
    fn unsigned(v: u64) -> Self {
        Count(v)
    }
}

/// Anything but null.
#[derive(Default)]
pub(crate) struct NotNull(pub(crate) bool);

impl<'de> Lenient<'de> for NotNull {
    fn other() -> Self {
        NotNull(true)
    }
    fn null() -> Self {
        NotNull(false)
    }
}

/// Each map entry: its key (borrowed unless escaped) for `field` to read the value with.
pub(crate) fn entries<'de, A: MapAccess<'de>>(
    mut map: A,
    mut field: impl FnMut(&str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
        field(key.as_deref().unwrap_or(""), &mut map)?;
    }
    Ok(())
}

/// An event read for some of its fields, each as a `Value` (a repeated one as its last), the
/// other entries skipped without building a tree: an event's fields as `Value::get` finds them
/// (`Null` when missing; none for an event that is not an object).
pub(crate) trait ValueFields: Default {
    /// `read` over each field's name and slot.
    fn with_fields<R>(&mut self, read: impl FnOnce(&mut [(&'static str, &mut Value)]) -> R) -> R;
}

/// A [`ValueFields`] event's map, read through serde.
pub(crate) fn value_fields<'de, T: ValueFields, A: MapAccess<'de>>(map: A) -> Result<T, A::Error> {
    let mut event = T::default();
    event.with_fields(|fields| {
        entries(map, |key, map| {
            match fields.iter_mut().find(|(name, _)| *name == key) {
                Some((_, slot)) => **slot = map.next_value()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })
    })?;
    Ok(event)
}

/// A [`ValueFields`] event, `None` when `data` is not JSON. Read by hand ([`crate::reader`]:
/// skipping the other entries through serde's `IgnoredAny` cost ~1,000 instructions an event),
/// else through serde, which decides when the reading by hand is not sure.
pub(crate) fn parse_value_fields<'de, T: ValueFields + Deserialize<'de>>(data: &'de str) -> Option<T> {
    value_fields_by_hand(data).map(|(event, _)| event).or_else(|| parse(data))
}

/// [`parse_value_fields`] for a stream's event: one like the last that read as nothing is not
/// read again ([`LikeNothing`]).
pub(crate) fn read_value_fields<'de, T: ValueFields + Deserialize<'de>>(
    nothing: &mut LikeNothing,
    data: &'de str,
) -> Option<T> {
    if nothing.is_like(data) {
        return Some(T::default());
    }
    let (mut event, skipped): (T, _) = match value_fields_by_hand(data) {
        Some(read) => read,
        None => (parse(data)?, None),
    };
    let none = event.with_fields(|fields| fields.iter().all(|(_, value)| value.is_null()));
    nothing.after(data, none, skipped);
    Some(event)
}

/// A [`ValueFields`] event read by hand, and where the last string value it skipped is; `None`
/// when not sure.
fn value_fields_by_hand<T: ValueFields>(data: &str) -> Option<(T, Option<Varying>)> {
    let mut event = T::default();
    let end = event.with_fields(|fields| {
        whole_object(data, |r, key| {
            match fields.iter_mut().find(|(name, _)| name.as_bytes() == key) {
                Some((_, slot)) => **slot = r.value()?,
                None => r.skip()?,
            }
            Some(())
        })
    })?;
    Some((event, end.skipped_string))
}

/// `data` read as `T`, all of it; `None` when it is not JSON.
pub(crate) fn parse<'de, T: Deserialize<'de>>(data: &'de str) -> Option<T> {
    let mut de = serde_json::Deserializer::from_str(data);
    let value = T::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// For the event readers' tests: each field of `T` read from `data` is what the `Value` tree of
/// `data` has there (`Null` when missing).
#[cfg(test)]
pub(crate) fn assert_fields_as_tree<'de, T: ValueFields + Deserialize<'de>>(data: &'de str) {
    let tree: Value = data.parse().unwrap();
    let mut event = parse_value_fields::<T>(data).unwrap();
    event.with_fields(|fields| {
        for (field, value) in fields {
            assert_eq!(**value, *tree.get(*field).unwrap_or(&Value::Null), "{data}: {field}");
        }
    });
}

/// For the event readers' tests: over random events of `top` keys (`keys` nested), and
/// mutations of them, `read` asserts that the reading by hand agrees with serde's wherever it
/// answers, and says whether it did and whether serde read an event; the reading by hand must
/// answer for most well-formed events.
#[cfg(test)]
pub(crate) fn assert_read_by_hand_as_through_serde(keys: &[&str], top: &[&str], read: impl Fn(&str) -> (bool, bool)) {
    let mut rng = crate::test_rng(0x5eed_e7e7);
    let (mut by_hand, mut well_formed) = (0, 0);
    for case in 0..30_000 {
        let mut data = crate::reader::random_json::object(&mut rng, keys, top);
        if case % 3 == 0 {
            crate::reader::random_json::mutate(&mut rng, &mut data);
        }
        let (answered, through_serde) = read(&data);
        by_hand += usize::from(answered);
        well_formed += usize::from(case % 3 != 0 && through_serde);
    }
    assert!(by_hand * 2 > well_formed, "read by hand: {by_hand} of {well_formed} well-formed events");
}

/// [`assert_read_by_hand_as_through_serde`] for a [`ValueFields`] event, over its fields and
/// `others`.
#[cfg(test)]
pub(crate) fn assert_value_fields_by_hand_as_through_serde<T>(others: &[&str])
where
    T: ValueFields + for<'a> Deserialize<'a> + PartialEq + fmt::Debug,
{
    let mut keys: Vec<&str> = others.to_vec();
    T::default().with_fields(|fields| keys.extend(fields.iter().map(|(name, _)| *name)));
    assert_read_by_hand_as_through_serde(&keys, &keys, |data| {
        let through_serde = parse::<T>(data);
        let read = value_fields_by_hand::<T>(data).map(|(event, _)| event);
        if read.is_some() {
            assert_eq!(read, through_serde, "{data}");
        }
        (read.is_some(), through_serde.is_some())
    });
}

/// Events of every shape for those tests: fields of interest and others, a repeated field, an
/// escaped key, nesting, an array, a scalar, null.
#[cfg(test)]
pub(crate) const ODD_EVENTS: [&str; 6] = [
    r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
    r#"{"type":[1],"type":"x","index":1,"index":2,"error":null}"#,
    r#"  {"x":{"deep":[[[{}]]]},"y":"\u00e9\n"}  "#,
    r#"[{"type":"message_start"},{"candidates":[]}]"#,
    r#""type""#,
    "null",
];
