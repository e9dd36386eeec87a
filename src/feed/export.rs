//! `kokuho-ledger feed export`: the feed's records after a position as the two CSV files of
//! feed.md — `FILE.household.csv` (資格情報(世帯)ファイル) and `FILE.individual.csv`
//! (資格情報(個人)ファイル): header row, columns in feed.md's order, dates `YYYYMMDD`, booleans
//! `1`/`0`, CRLF, UTF-8 or Windows-31J. A character the encoding cannot represent fails the
//! export (naming the record and the field) unless replacements are allowed: then it becomes
//! `〓` and each replacement is reported.

use std::borrow::Cow;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::de::Visitor;
use serde::Deserialize;
use serde_json::Value;

use crate::projections::feed::feed_records;
use crate::store::sql::Db;
use crate::store::Store;

pub const HOUSEHOLD_COLUMNS: [&str; 13] = [
    "position",
    "cause_position",
    "kind",
    "insurer_number",
    "symbol",
    "number",
    "household_id",
    "nhi_head_person_id",
    "nhi_head_name",
    "deemed_head",
    "deemed_head_person_id",
    "insured_count",
    "recorded_at",
];

pub const INDIVIDUAL_COLUMNS: [&str; 26] = [
    "position",
    "cause_position",
    "kind",
    "change",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "person_id",
    "name",
    "name_kana",
    "real_name",
    "real_name_kana",
    "birth_date",
    "sex",
    "sex_on_back",
    "is_nhi_head",
    "is_deemed_head",
    "qualified_on",
    "disqualified_on",
    "loss_code",
    "applied_from",
    "applied_to",
    "disclosure_restricted",
    "document_collected_on",
    "recorded_at",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    #[value(name = "utf-8")]
    Utf8,
    /// Windows-31J (CP932).
    #[value(name = "shift_jis")]
    ShiftJis,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::ShiftJis => "shift_jis",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Encoding::Utf8, Encoding::ShiftJis].into_iter().find(|e| e.name() == s)
    }
}

/// An export stopped by a character Windows-31J cannot represent (feed.md: never dropped
/// silently).
#[derive(Debug, thiserror::Error)]
#[error(
    "record {position}, field {field}: U+{code:04X} cannot be written in Windows-31J (use --replace-unmappable to write 〓 instead)"
)]
pub struct UnmappableError {
    pub position: i64,
    pub field: &'static str,
    pub code: u32,
}

/// A character the chosen encoding cannot represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmappable {
    pub position: i64,
    pub field: &'static str,
    pub character: char,
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub household_file: PathBuf,
    pub individual_file: PathBuf,
    pub records: usize,
    /// The last feed position written (the next run's `--after`); `after` when none.
    pub last_position: i64,
    pub replaced: Vec<Unmappable>,
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One value of a stored record, borrowed from its JSON text where it can be: the export reads
/// a million records without building a `serde_json::Value` tree for each.
enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Text(Cow<'a, str>),
    /// Nothing of feed.md's record is nested; anything else is written as its JSON.
    Other(String),
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a feed record field")
            }
            fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_none<E>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Cell<'de>, E> {
                Ok(Cell::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Cell<'de>, E> {
                Ok(Cell::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Cell<'de>, E> {
                i64::try_from(n).map(Cell::Int).map_err(E::custom)
            }
            fn visit_f64<E>(self, n: f64) -> Result<Cell<'de>, E> {
                Ok(Cell::Other(n.to_string()))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
                let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Cell::Other(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Cell::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every field a feed record may have (household and individual columns, each once).
const FIELDS: [&str; 32] = [
    "position",
    "cause_position",
    "kind",
    "change",
    "insurer_number",
    "symbol",
    "number",
    "household_id",
    "nhi_head_person_id",
    "nhi_head_name",
    "deemed_head",
    "deemed_head_person_id",
    "insured_count",
    "branch",
    "person_id",
    "name",
    "name_kana",
    "real_name",
    "real_name_kana",
    "birth_date",
    "sex",
    "sex_on_back",
    "is_nhi_head",
    "is_deemed_head",
    "qualified_on",
    "disqualified_on",
    "loss_code",
    "applied_from",
    "applied_to",
    "disclosure_restricted",
    "document_collected_on",
    "recorded_at",
];

const POSITION: usize = 0;
const KIND: usize = 2;

fn slot_of(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == name)
}

/// A stored record's fields by slot of [`FIELDS`]: one pass over its JSON, no map built
/// (fields outside feed.md's columns, such as a `my_number`, are skipped).
struct Slots<'a>([Option<Cell<'a>>; FIELDS.len()]);

/// Reads [`Slots`], guessing each key's slot from the key before it in earlier records:
/// stored records list their fields in one order per kind, so the guess is almost always right.
struct SlotsSeed<'h>(&'h mut [usize; 64]);

impl<'de> serde::de::DeserializeSeed<'de> for SlotsSeed<'_> {
    type Value = Slots<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Slots<'de>, D::Error> {
        struct V<'h>(&'h mut [usize; 64]);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Slots<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a feed record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Slots<'de>, A::Error> {
                let mut slots = Slots(std::array::from_fn(|_| None));
                // The slot of the previous key (START before the first).
                let mut previous = START;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let guess = self.0[previous];
                    let slot = if FIELDS.get(guess) == Some(&key.as_ref()) {
                        Some(guess)
                    } else {
                        let found = slot_of(&key);
                        if let Some(f) = found {
                            self.0[previous] = f;
                        }
                        found
                    };
                    previous = slot.unwrap_or(START);
                    match slot {
                        Some(i) => slots.0[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(slots)
            }
        }
        d.deserialize_map(V(self.0))
    }
}

/// The successor hint of "no key yet".
const START: usize = 63;

fn parse_record<'a>(text: &'a str, hints: &mut [usize; 64]) -> serde_json::Result<Slots<'a>> {
    use serde::de::DeserializeSeed as _;
    let mut d = serde_json::Deserializer::from_str(text);
    let slots = SlotsSeed(hints).deserialize(&mut d)?;
    d.end()?;
    Ok(slots)
}

/// Appends one CSV field: dates as YYYYMMDD, booleans 1/0, null empty; quoted when it must be.
fn push_field(line: &mut String, cell: Option<&Cell<'_>>, column: &str) {
    match cell {
        None | Some(Cell::Null) => {}
        Some(Cell::Bool(b)) => line.push(if *b { '1' } else { '0' }),
        Some(Cell::Int(n)) => {
            use std::fmt::Write as _;
            let _ = write!(line, "{n}");
        }
        Some(Cell::Text(s)) => {
            let b = s.as_bytes();
            let is_date = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && column != "recorded_at";
            if is_date {
                line.push_str(&s[..4]);
                line.push_str(&s[5..7]);
                line.push_str(&s[8..]);
            } else {
                push_quoted(line, s);
            }
        }
        Some(Cell::Other(s)) => push_quoted(line, s),
    }
}

/// RFC 4180: a field holding a comma, quote or line break is quoted, quotes doubled.
fn push_quoted(line: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        line.push('"');
        line.push_str(&s.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(s);
    }
}

/// Windows-31J bytes of 〓 (GETA MARK), the conventional stand-in for an unmappable character.
const GETA: &[u8] = &[0x81, 0xAC];

struct Out {
    file: std::io::BufWriter<std::fs::File>,
    encoding: Encoding,
    replace: bool,
    /// Reused per line: the UTF-8 text, where each field starts in it, the encoded bytes.
    line: String,
    starts: Vec<usize>,
    bytes: Vec<u8>,
}

impl Out {
    fn open(path: &Path, encoding: Encoding, replace: bool) -> anyhow::Result<Self> {
        Ok(Self {
            file: std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            encoding,
            replace,
            line: String::with_capacity(1024),
            starts: Vec::with_capacity(32),
            bytes: Vec::with_capacity(1024),
        })
    }

    /// Writes one CSV line (CRLF), built by `fill` field by field, in the chosen encoding.
    fn line(
        &mut self,
        position: i64,
        columns: &[&'static str],
        mut fill: impl FnMut(&mut String, usize, &'static str),
        replaced: &mut Vec<Unmappable>,
    ) -> anyhow::Result<()> {
        self.line.clear();
        self.starts.clear();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            self.starts.push(self.line.len());
            fill(&mut self.line, i, column);
        }
        self.line.push_str("\r\n");
        match self.encoding {
            Encoding::Utf8 => self.file.write_all(self.line.as_bytes())?,
            Encoding::ShiftJis => {
                self.encode_shift_jis(position, columns, replaced)?;
                self.file.write_all(&self.bytes)?;
            }
        }
        Ok(())
    }

    /// The whole line in one pass of the encoder; an unmappable character is named by the
    /// field it sits in.
    fn encode_shift_jis(
        &mut self,
        position: i64,
        columns: &[&'static str],
        replaced: &mut Vec<Unmappable>,
    ) -> anyhow::Result<()> {
        use encoding_rs::EncoderResult;
        let mut encoder = encoding_rs::SHIFT_JIS.new_encoder();
        self.bytes.clear();
        // Windows-31J never needs more than two bytes for a character of up to three in UTF-8.
        self.bytes.resize(self.line.len() + 16, 0);
        let (mut read, mut written) = (0, 0);
        loop {
            let (result, r, w) =
                encoder.encode_from_utf8_without_replacement(&self.line[read..], &mut self.bytes[written..], true);
            read += r;
            written += w;
            match result {
                EncoderResult::InputEmpty => break,
                EncoderResult::OutputFull => {
                    let len = self.bytes.len();
                    self.bytes.resize(len * 2, 0);
                }
                EncoderResult::Unmappable(c) => {
                    let at = read - c.len_utf8();
                    let field = columns[self.starts.partition_point(|s| *s <= at) - 1];
                    if !self.replace {
                        return Err(UnmappableError {
                            position,
                            field,
                            code: c as u32,
                        }
                        .into());
                    }
                    replaced.push(Unmappable {
                        position,
                        field,
                        character: c,
                    });
                    if self.bytes.len() < written + GETA.len() {
                        self.bytes.resize(written + GETA.len() + 16, 0);
                    }
                    self.bytes[written..written + GETA.len()].copy_from_slice(GETA);
                    written += GETA.len();
                }
            }
        }
        self.bytes.truncate(written);
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(())
    }
}

/// Exports the records after `after` (at most `limit` of them). On failure both files are
/// removed: nothing half-written is left for a transfer to pick up.
pub async fn export(
    store: &Store,
    after: i64,
    limit: Option<usize>,
    out: &Path,
    encoding: Encoding,
    replace: bool,
) -> anyhow::Result<Exported> {
    let household_file = sibling(out, ".household.csv");
    let individual_file = sibling(out, ".individual.csv");
    let result = write_files(
        store,
        after,
        limit.unwrap_or(usize::MAX),
        &household_file,
        &individual_file,
        encoding,
        replace,
    )
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&household_file);
        let _ = std::fs::remove_file(&individual_file);
    }
    let (records, last_position, replaced) = result?;
    Ok(Exported {
        household_file,
        individual_file,
        records,
        last_position,
        replaced,
    })
}

const PAGE: usize = 10_000;

async fn write_files(
    store: &Store,
    after: i64,
    limit: usize,
    household_file: &Path,
    individual_file: &Path,
    encoding: Encoding,
    replace: bool,
) -> anyhow::Result<(usize, i64, Vec<Unmappable>)> {
    let mut households = Out::open(household_file, encoding, replace)?;
    let mut individuals = Out::open(individual_file, encoding, replace)?;
    let mut replaced = Vec::new();
    households.line(0, &HOUSEHOLD_COLUMNS, |l, _, c| l.push_str(c), &mut replaced)?;
    individuals.line(0, &INDIVIDUAL_COLUMNS, |l, _, c| l.push_str(c), &mut replaced)?;
    let slots = |columns: &[&str]| -> Vec<usize> {
        columns
            .iter()
            .map(|c| slot_of(c).expect("every column is a field"))
            .collect()
    };
    let (household_slots, individual_slots) = (slots(&HOUSEHOLD_COLUMNS), slots(&INDIVIDUAL_COLUMNS));
    let mut hints = [usize::MAX; 64];
    let db = store.db().clone();
    let (mut last, mut count) = (after, 0usize);
    // The next page is read while this one is written.
    let mut next = Some(tokio::spawn(read_page(db.clone(), last, PAGE.min(limit))));
    while let Some(reading) = next.take() {
        let page = reading.await??;
        if page.is_empty() {
            break;
        }
        let page_last = page_last_position(&page)?;
        let remaining = limit - count - page.len().min(limit - count);
        if page.len() == PAGE && remaining > 0 {
            next = Some(tokio::spawn(read_page(db.clone(), page_last, PAGE.min(remaining))));
        }
        for text in page.iter().take(limit - count) {
            let record = parse_record(text, &mut hints).context("a stored feed record is not JSON")?;
            let position = match &record.0[POSITION] {
                Some(Cell::Int(p)) => *p,
                _ => anyhow::bail!("a stored feed record has no position"),
            };
            let household = matches!(&record.0[KIND], Some(Cell::Text(k)) if k == "household");
            let (out, columns, slots): (&mut Out, &[&'static str], &[usize]) = if household {
                (&mut households, &HOUSEHOLD_COLUMNS, &household_slots)
            } else {
                (&mut individuals, &INDIVIDUAL_COLUMNS, &individual_slots)
            };
            out.line(
                position,
                columns,
                |l, i, c| push_field(l, record.0[slots[i]].as_ref(), c),
                &mut replaced,
            )?;
            last = position;
            count += 1;
        }
        if count >= limit {
            break;
        }
    }
    households.finish()?;
    individuals.finish()?;
    Ok((count, last, replaced))
}

async fn read_page(db: Db, after: i64, limit: usize) -> Result<Vec<String>, crate::store::StoreError> {
    feed_records(&db, after, limit as i64).await
}

fn page_last_position(page: &[String]) -> anyhow::Result<i64> {
    #[derive(Deserialize)]
    struct Position {
        position: i64,
    }
    let last = page.last().context("an empty page")?;
    Ok(serde_json::from_str::<Position>(last)
        .context("a stored feed record has no position")?
        .position)
}
