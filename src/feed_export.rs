//! `kokuho-ledger feed export`: the feed's records after a position as the two CSV files of
//! feed.md — `FILE.household.csv` (資格情報(世帯)ファイル) and `FILE.individual.csv`
//! (資格情報(個人)ファイル): header row, columns in feed.md's order, dates `YYYYMMDD`, booleans
//! `1`/`0`, CRLF, UTF-8 or Windows-31J. A character the encoding cannot represent fails the
//! export (naming the record and the field) unless replacements are allowed: then it becomes
//! `〓` and each replacement is reported.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::projections::db::Db;
use crate::projections::read;
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

/// One CSV field: dates as YYYYMMDD, booleans 1/0, null empty; quoted when it must be.
fn field(v: &Value, column: &str) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let is_date =
                s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' && column != "recorded_at";
            if is_date {
                s.replace('-', "")
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

struct Out {
    file: std::io::BufWriter<std::fs::File>,
    encoding: Encoding,
    replace: bool,
}

impl Out {
    /// Writes one CSV line (CRLF) in the chosen encoding.
    fn line(
        &mut self,
        position: i64,
        fields: &[(&'static str, String)],
        replaced: &mut Vec<Unmappable>,
    ) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for (i, (name, text)) in fields.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            match self.encoding {
                Encoding::Utf8 => bytes.extend_from_slice(text.as_bytes()),
                Encoding::ShiftJis => {
                    // The whole field at once; character by character only to name what failed.
                    let (encoded, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
                    if !unmappable {
                        bytes.extend_from_slice(&encoded);
                        continue;
                    }
                    for c in text.chars() {
                        let mut buf = [0u8; 4];
                        let s = c.encode_utf8(&mut buf);
                        let (encoded, _, unmappable) = encoding_rs::SHIFT_JIS.encode(s);
                        if unmappable {
                            let u = Unmappable {
                                position,
                                field: name,
                                character: c,
                            };
                            if !self.replace {
                                anyhow::bail!(
                                    "record {position}, field {name}: U+{:04X} cannot be written in Windows-31J \
                                     (use --replace-unmappable to write 〓 instead)",
                                    c as u32
                                );
                            }
                            replaced.push(u);
                            bytes.extend_from_slice(&encoding_rs::SHIFT_JIS.encode("〓").0);
                        } else {
                            bytes.extend_from_slice(&encoded);
                        }
                    }
                }
            }
        }
        bytes.extend_from_slice(b"\r\n");
        self.file.write_all(&bytes)?;
        Ok(())
    }
}

/// Exports the records after `after`. On failure both files are removed: nothing half-written
/// is left for a transfer to pick up.
pub async fn export(
    store: &Store,
    after: i64,
    out: &Path,
    encoding: Encoding,
    replace: bool,
) -> anyhow::Result<Exported> {
    let household_file = sibling(out, ".household.csv");
    let individual_file = sibling(out, ".individual.csv");
    let result = write_files(store, after, &household_file, &individual_file, encoding, replace).await;
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

async fn write_files(
    store: &Store,
    after: i64,
    household_file: &Path,
    individual_file: &Path,
    encoding: Encoding,
    replace: bool,
) -> anyhow::Result<(usize, i64, Vec<Unmappable>)> {
    let open = |p: &Path| -> anyhow::Result<Out> {
        Ok(Out {
            file: std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            encoding,
            replace,
        })
    };
    let mut households = open(household_file)?;
    let mut individuals = open(individual_file)?;
    let mut replaced = Vec::new();
    let header = |cols: &[&'static str]| cols.iter().map(|c| (*c, (*c).to_owned())).collect::<Vec<_>>();
    households.line(0, &header(&HOUSEHOLD_COLUMNS), &mut replaced)?;
    individuals.line(0, &header(&INDIVIDUAL_COLUMNS), &mut replaced)?;
    let db = Db::new(store);
    let (mut last, mut count) = (after, 0usize);
    loop {
        let page = read::feed_records(&db, last, 10_000).await?;
        if page.is_empty() {
            break;
        }
        for text in &page {
            let record: Value = serde_json::from_str(text).context("a stored feed record is not JSON")?;
            let position = record["position"]
                .as_i64()
                .context("a stored feed record has no position")?;
            let (out, columns): (&mut Out, &[&'static str]) = if record["kind"] == "household" {
                (&mut households, &HOUSEHOLD_COLUMNS)
            } else {
                (&mut individuals, &INDIVIDUAL_COLUMNS)
            };
            let fields: Vec<(&'static str, String)> = columns.iter().map(|c| (*c, field(&record[*c], c))).collect();
            out.line(position, &fields, &mut replaced)?;
            last = position;
            count += 1;
        }
    }
    households.file.flush()?;
    individuals.file.flush()?;
    households.file.get_ref().sync_all()?;
    individuals.file.get_ref().sync_all()?;
    Ok((count, last, replaced))
}
