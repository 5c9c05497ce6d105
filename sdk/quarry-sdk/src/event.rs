//! Typed access to the fields of an [`Event`].

use crate::{Event, EventColumns};

/// Marks, in [`EventColumns::lengths`], an event without the field.
pub const ABSENT: u32 = u32::MAX;

impl EventColumns {
    /// The events of `batch`, by column (what the host sends a module that
    /// exports `columnar`, contract 0.2.4); `fields` is the number of
    /// declared fields.
    pub fn from_events(batch: &[Event], fields: usize) -> Self {
        let mut lengths = Vec::with_capacity(batch.len() * fields);
        let mut text = String::new();
        for field in 0..fields {
            for event in batch {
                match event.values.get(field).and_then(Option::as_deref) {
                    Some(value) => {
                        lengths.push(u32::try_from(value.len()).unwrap_or(ABSENT - 1));
                        text.push_str(value);
                    }
                    None => lengths.push(ABSENT),
                }
            }
        }
        EventColumns {
            timestamps: batch.iter().map(|e| e.timestamp_ms).collect(),
            offsets: batch.iter().map(|e| e.offset).collect(),
            lengths,
            text,
        }
    }

    /// The events, one [`Event`] per row with its values in declaration
    /// order, as `scan` would have received them.
    ///
    /// # Errors
    /// A batch whose lists disagree in length, or whose lengths do not cut
    /// `text` at character boundaries: a host bug, named.
    pub fn to_events(&self) -> Result<Vec<Event>, String> {
        let mut events = Vec::new();
        let rows = self.fill(&mut events, &mut Vec::new())?;
        events.truncate(rows);
        Ok(events)
    }

    /// As [`EventColumns::to_events`], into `events[..rows]` (returns
    /// `rows`; entries past it are left as they are), reusing the events,
    /// their value lists and the strings of `spare` (where the values of
    /// the previous batch go), so a task's batches after the first allocate
    /// almost nothing.
    ///
    /// # Errors
    /// As [`EventColumns::to_events`].
    pub fn fill(&self, events: &mut Vec<Event>, spare: &mut Vec<String>) -> Result<usize, String> {
        /// Longer strings are freed, not kept: a few long values must not
        /// pin their size in every slot of the pool.
        const MAX_SPARE_CAPACITY: usize = 256;
        let rows = self.timestamps.len();
        if self.offsets.len() != rows {
            return Err(format!(
                "a batch by column has {rows} timestamps but {} offsets",
                self.offsets.len()
            ));
        }
        let fields = self.lengths.len().checked_div(rows).unwrap_or(0);
        if fields * rows != self.lengths.len() {
            return Err(format!(
                "a batch by column has {} lengths, not a multiple of its {rows} events",
                self.lengths.len()
            ));
        }
        if events.len() < rows {
            events.resize_with(rows, || Event {
                timestamp_ms: 0,
                offset: 0,
                values: Vec::new(),
            });
        }
        let poolable = |s: &String| s.capacity() <= MAX_SPARE_CAPACITY;
        for ((event, &timestamp_ms), &offset) in
            events.iter_mut().zip(&self.timestamps).zip(&self.offsets)
        {
            event.timestamp_ms = timestamp_ms;
            event.offset = offset;
            if event.values.len() > fields {
                spare.extend(event.values.drain(fields..).flatten().filter(poolable));
            }
            event.values.resize(fields, None);
        }
        let mut at = 0usize;
        // Field by field, as the lengths come: each value overwrites the
        // string its slot held in the previous batch, in place.
        for (field, lengths) in self.lengths.chunks(rows.max(1)).enumerate() {
            for (event, &len) in events.iter_mut().zip(lengths) {
                let slot = &mut event.values[field];
                if len == ABSENT {
                    spare.extend(slot.take().filter(poolable));
                    continue;
                }
                let end = at.saturating_add(len as usize);
                let text = self.text.get(at..end).ok_or_else(|| {
                    format!("a batch by column cuts its text at byte {at}..{end}")
                })?;
                at = end;
                match slot {
                    // A long string is kept only for a long value.
                    Some(value) if poolable(value) || text.len() > MAX_SPARE_CAPACITY => {
                        value.clear();
                        value.push_str(text);
                    }
                    _ => {
                        let mut value = spare.pop().unwrap_or_default();
                        value.clear();
                        value.push_str(text);
                        *slot = Some(value);
                    }
                }
            }
        }
        if at != self.text.len() {
            return Err(format!(
                "a batch by column leaves {} bytes of text unused",
                self.text.len() - at
            ));
        }
        Ok(rows)
    }
}

/// The position of a declared field in [`Event::values`].
///
/// A module lists the fields it reads in its [`Descriptor`](crate::Descriptor);
/// the host projects every event onto that list, so a field is addressed by
/// its index in it. Declare fields with [`fields!`](crate::fields), which
/// computes the indexes at compile time from the names, so names and indexes
/// cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Field(usize);

impl Field {
    /// The field at position `index` of the declared field list.
    pub const fn at(index: usize) -> Self {
        Field(index)
    }

    /// Position of the field in the declared field list.
    pub const fn index(self) -> usize {
        self.0
    }
}

/// Declares the fields a module reads, as a module of [`Field`] constants plus
/// the list of names for [`Descriptor::with_fields`](crate::Descriptor::with_fields).
///
/// ```
/// quarry_sdk::fields! {
///     /// Fields of a Windows process-creation event.
///     pub mod field {
///         /// The full command line.
///         COMMAND_LINE = "CommandLine",
///         IMAGE = "Image",
///     }
/// }
///
/// assert_eq!(field::NAMES, &["CommandLine", "Image"]);
/// assert_eq!(field::IMAGE.index(), 1);
/// ```
#[macro_export]
macro_rules! fields {
    (
        $(#[$module_meta:meta])*
        $vis:vis mod $module:ident {
            $( $(#[$field_meta:meta])* $name:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$module_meta])*
        $vis mod $module {
            // The discriminants of this enum are the declaration positions,
            // which is exactly the index the host uses in `event.values`.
            #[allow(non_camel_case_types, dead_code, clippy::upper_case_acronyms)]
            enum __FieldIndex { $($name),+ }

            /// The declared field names, in the order the host projects them.
            pub const NAMES: &[&str] = &[$($text),+];

            $(
                $(#[$field_meta])*
                #[doc = concat!("Index of the `", $text, "` field.")]
                pub const $name: $crate::Field = $crate::Field::at(__FieldIndex::$name as usize);
            )+
        }
    };
}

impl Event {
    /// Builds an event; mostly useful in tests of a module's logic.
    pub fn new(timestamp_ms: i64, offset: u64, values: Vec<Option<String>>) -> Self {
        Event {
            timestamp_ms,
            offset,
            values,
        }
    }

    /// An event with `values` set on some of the module's `names` (usually
    /// the `NAMES` of its [`fields!`](crate::fields) module), the other
    /// fields absent; for tests of a module's logic.
    ///
    /// ```
    /// quarry_sdk::fields! {
    ///     mod field {
    ///         IMAGE = "Image",
    ///         USER = "User",
    ///     }
    /// }
    /// let event = quarry_sdk::Event::with_values(0, 7, field::NAMES, &[(field::USER, "alice")]);
    /// assert_eq!(event.get(field::USER), Some("alice"));
    /// assert_eq!(event.get(field::IMAGE), None);
    /// ```
    pub fn with_values(
        timestamp_ms: i64,
        offset: u64,
        names: &[&str],
        values: &[(Field, &str)],
    ) -> Self {
        let mut all = vec![None; names.len()];
        for &(field, text) in values {
            if let Some(slot) = all.get_mut(field.index()) {
                *slot = Some(text.to_owned());
            }
        }
        Event::new(timestamp_ms, offset, all)
    }

    /// The raw text of `field`, or `None` when the event does not have it.
    ///
    /// Numbers and booleans arrive in their JSON text form (`4625`, `true`).
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values.get(field.index())?.as_deref()
    }

    /// The text of `field` with surrounding whitespace removed, or `None` when
    /// the field is absent or blank.
    pub fn get_nonempty(&self, field: Field) -> Option<&str> {
        let value = self.get(field)?.trim();
        (!value.is_empty()).then_some(value)
    }

    /// The first of `fields` that is present and not blank.
    ///
    /// Useful when sources name the same thing differently, for example a
    /// host in `Computer` or `Hostname`.
    pub fn first_of(&self, fields: &[Field]) -> Option<&str> {
        fields.iter().find_map(|&field| self.get_nonempty(field))
    }

    /// `field` as an unsigned integer; `None` when absent or not a number.
    pub fn get_u64(&self, field: Field) -> Option<u64> {
        self.get(field)?.trim().parse().ok()
    }

    /// `field` as a signed integer; `None` when absent or not a number.
    pub fn get_i64(&self, field: Field) -> Option<i64> {
        self.get(field)?.trim().parse().ok()
    }

    /// `field` as a floating-point number; `None` when absent or not a number.
    pub fn get_f64(&self, field: Field) -> Option<f64> {
        self.get(field)?.trim().parse().ok()
    }

    /// `field` as a boolean: `true`/`false`, `1`/`0`, `yes`/`no` (any case);
    /// `None` when absent or something else.
    pub fn get_bool(&self, field: Field) -> Option<bool> {
        parse_bool(self.get(field)?.trim())
    }

    /// `field` parsed as an RFC 3339 time, in milliseconds since the Unix
    /// epoch; `None` when absent or not such a time.
    pub fn get_time_ms(&self, field: Field) -> Option<i64> {
        crate::time::parse_rfc3339_ms(self.get(field)?.trim()).ok()
    }

    /// Whether `field` equals `value`, ignoring ASCII case (as the host's
    /// prefilter does).
    pub fn eq_ignore_case(&self, field: Field, value: &str) -> bool {
        self.get(field)
            .is_some_and(|actual| actual.eq_ignore_ascii_case(value))
    }
}

/// Parses the boolean spellings accepted by [`Event::get_bool`] and
/// [`Params::bool_or`](crate::Params::bool_or).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 3] = ["false", "0", "no"];
    if TRUE.iter().any(|t| text.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| text.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::fields! {
        mod f {
            EVENT_ID = "EventID",
            USER = "TargetUserName",
            COMPUTER = "Computer",
            HOSTNAME = "Hostname",
            ELEVATED = "Elevated",
            WHEN = "UtcTime",
        }
    }

    fn event(values: &[Option<&str>]) -> Event {
        Event::new(
            1_000,
            7,
            values.iter().map(|v| v.map(str::to_owned)).collect(),
        )
    }

    #[test]
    fn field_macro_assigns_declaration_order() {
        assert_eq!(
            f::NAMES,
            &[
                "EventID",
                "TargetUserName",
                "Computer",
                "Hostname",
                "Elevated",
                "UtcTime"
            ]
        );
        assert_eq!(f::EVENT_ID.index(), 0);
        assert_eq!(f::HOSTNAME.index(), 3);
        assert_eq!(f::WHEN, Field::at(5));
    }

    #[test]
    fn typed_getters() {
        let e = event(&[
            Some(" 4625 "),
            Some("Admin"),
            Some(""),
            Some("WS01"),
            Some("TRUE"),
            Some("2023-09-25T20:39:50.822Z"),
        ]);
        assert_eq!(e.get_u64(f::EVENT_ID), Some(4625));
        assert_eq!(e.get_i64(f::EVENT_ID), Some(4625));
        assert_eq!(e.get_f64(f::EVENT_ID), Some(4625.0));
        assert_eq!(e.get_u64(f::USER), None);
        assert_eq!(e.get(f::USER), Some("Admin"));
        assert!(e.eq_ignore_case(f::USER, "admin"));
        assert_eq!(e.get_bool(f::ELEVATED), Some(true));
        assert_eq!(e.get_nonempty(f::COMPUTER), None);
        assert_eq!(e.first_of(&[f::COMPUTER, f::HOSTNAME]), Some("WS01"));
        assert_eq!(e.get_time_ms(f::WHEN), Some(1_695_674_390_822));
    }

    #[test]
    fn missing_and_out_of_range_fields_are_none() {
        let e = event(&[None]);
        assert_eq!(e.get(f::EVENT_ID), None);
        assert_eq!(e.get(f::WHEN), None);
        assert_eq!(e.get_u64(f::WHEN), None);
        assert_eq!(e.first_of(&[f::COMPUTER, f::HOSTNAME]), None);
        assert!(!e.eq_ignore_case(f::USER, ""));
    }
}

#[cfg(test)]
mod column_tests {
    use super::*;

    #[test]
    fn batches_by_column_round_trip_and_refuse_damage() {
        let events = vec![
            Event::new(
                5,
                10,
                vec![Some("4625".into()), None, Some("ünïcode ✓".into())],
            ),
            Event::new(-3, 11, vec![None, Some(String::new()), Some("b".into())]),
            Event::new(7, 19, vec![Some("x".into()), Some("yz".into()), None]),
        ];
        let columns = EventColumns::from_events(&events, 3);
        // Field by field: EventID of the three events first.
        assert_eq!(&columns.lengths[..3], &[4, ABSENT, 1]);
        assert_eq!(columns.text, "4625xyzünïcode ✓b");
        assert_eq!(columns.to_events(), Ok(events.clone()));
        assert_eq!(
            EventColumns::from_events(&[], 3).to_events(),
            Ok(Vec::new())
        );

        let mut cut = columns.clone();
        cut.lengths[6] = 1; // inside the two-byte `ü`
        assert!(cut.to_events().is_err_and(|e| e.contains("cuts its text")));
        let mut short = columns.clone();
        short.offsets.pop();
        assert!(short.to_events().is_err_and(|e| e.contains("offsets")));
        let mut odd = columns.clone();
        odd.lengths.pop();
        assert!(odd.to_events().is_err_and(|e| e.contains("multiple")));
        let mut spare = columns;
        spare.text.push('!');
        assert!(spare.to_events().is_err_and(|e| e.contains("unused")));
    }

    /// Filling reuses the previous batch's events and strings and gives
    /// exactly the new batch: values absent now and present before, fewer
    /// events, more fields, long values that are not pooled.
    #[test]
    fn filling_reuses_the_previous_batch_without_leaking_it() {
        let long = "x".repeat(1000);
        let first = vec![
            Event::new(1, 1, vec![Some("aaaa".into()), Some(long.clone())]),
            Event::new(2, 2, vec![Some("b".into()), None]),
            Event::new(3, 3, vec![None, Some("cc".into())]),
        ];
        let second = vec![
            Event::new(4, 4, vec![None, Some("d".into()), Some("e".into())]),
            Event::new(5, 5, vec![Some(long), None, Some(String::new())]),
        ];
        let mut events = Vec::new();
        let mut spare = Vec::new();
        let columns = EventColumns::from_events(&first, 2);
        assert_eq!(columns.fill(&mut events, &mut spare), Ok(3));
        assert_eq!(events, first);
        let columns = EventColumns::from_events(&second, 3);
        assert_eq!(columns.fill(&mut events, &mut spare), Ok(2));
        assert_eq!(&events[..2], second.as_slice());
        assert!(
            spare.iter().all(|s| s.capacity() <= 256),
            "long strings are not pooled"
        );
        let again = EventColumns::from_events(&first, 2);
        assert_eq!(again.fill(&mut events, &mut spare), Ok(3));
        assert_eq!(events, first);
    }
}
