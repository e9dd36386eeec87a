//! Identifiers and value types that parse: an invalid value cannot be constructed.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::error::InputError;

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

macro_rules! digit_id {
    ($name:ident, $code:literal, $what:literal) => {
        #[doc = concat!("A ", $what, ": 1–15 ASCII digits.")]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InputError> {
                if all_digits(s) && s.len() <= 15 {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InputError::new(
                        $code,
                        concat!($what, " must be 1 to 15 ASCII digits"),
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InputError;
            fn try_from(s: String) -> Result<Self, InputError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

digit_id!(PersonId, "invalid_person_id", "person_id");

/// 保険者番号: the insurer's six digits, configured per deployment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InsurerNumber(String);

impl InsurerNumber {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if s.len() == 6 && all_digits(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::new(
                "invalid_insurer_number",
                "the insurer number must be 6 digits",
            ))
        }
    }
    /// `000000`: the placeholder of an unconfigured deployment.
    pub fn is_placeholder(&self) -> bool {
        self.0 == "000000"
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InsurerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
digit_id!(HouseholdId, "invalid_household_id", "household_id");

/// A My Number (個人番号). Debug never prints the digits: it is specific personal information.
#[derive(Clone, PartialEq, Eq)]
pub struct MyNumber(String);

impl MyNumber {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if s.len() != 12 || !all_digits(s) {
            return Err(InputError::new(
                "invalid_my_number",
                "my_number must be 12 ASCII digits",
            ));
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        if check_digit(&d[..11]) != d[11] {
            return Err(InputError::new(
                "invalid_my_number",
                "my_number check digit does not match",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The digits, for the encrypted vault and the commitment only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Check digit of domain.md §8 for the first eleven digits (left to right).
pub fn check_digit(first_eleven: &[u32]) -> u32 {
    debug_assert_eq!(first_eleven.len(), 11);
    // Pn is the n-th digit counted from the right, excluding the check digit.
    let s: u32 = (1..=11)
        .map(|n| {
            let p = first_eleven[11 - n];
            let q = if n <= 6 { n as u32 + 1 } else { n as u32 - 5 };
            p * q
        })
        .sum();
    let r = s % 11;
    if r <= 1 {
        0
    } else {
        11 - r
    }
}

impl fmt::Debug for MyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MyNumber(<redacted>)")
    }
}

/// Sex as printed on the card: `1` male, `2` female.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "1")]
    Male,
    #[serde(rename = "2")]
    Female,
}

impl Sex {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        match s {
            "1" => Ok(Sex::Male),
            "2" => Ok(Sex::Female),
            _ => Err(InputError::new("invalid_sex", "sex must be \"1\" or \"2\"")),
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "1",
            Sex::Female => "2",
        }
    }
}

/// A name as written (漢字): stored exactly as given, including characters outside the BMP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

pub const MAX_NAME_CHARS: usize = 100;

impl Name {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if s.trim().is_empty() {
            return Err(InputError::new("invalid_name", "a name must not be empty"));
        }
        if s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
            return Err(InputError::new(
                "invalid_name",
                "a name must be at most 100 characters without control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Name {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}
impl From<Name> for String {
    fn from(v: Name) -> String {
        v.0
    }
}

/// A name in katakana. Half-width katakana and half-width spaces are accepted and stored in
/// full width; anything but katakana, ー, ・ and spaces is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kana(String);

impl Kana {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        // NFKC maps half-width katakana (and ｰ, ･) to full width and composes ﾞ/ﾟ onto the
        // preceding letter; it would also fold the ideographic space to ASCII, so spaces are
        // widened afterwards.
        let normalised: String = s.nfkc().map(|c| if c == ' ' { '\u{3000}' } else { c }).collect();
        if normalised.chars().all(|c| c == '\u{3000}') {
            return Err(InputError::new("invalid_kana", "a kana name must not be empty"));
        }
        if normalised.chars().count() > MAX_NAME_CHARS {
            return Err(InputError::new(
                "invalid_kana",
                "a kana name must be at most 100 characters",
            ));
        }
        if let Some(bad) = normalised.chars().find(|&c| !is_kana_char(c)) {
            return Err(InputError::new(
                "invalid_kana",
                format!(
                    "a kana name may contain only katakana, ー, ・ and spaces (found U+{:04X})",
                    bad as u32
                ),
            ));
        }
        Ok(Self(normalised))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without its spaces: what a kana search matches a prefix of (staff type
    /// ヤマダタロウ or ヤマダ　タロウ alike).
    pub fn search_key(&self) -> String {
        self.0.chars().filter(|c| *c != '\u{3000}').collect()
    }
}

fn is_kana_char(c: char) -> bool {
    matches!(
        c,
        '\u{30A1}'..='\u{30FA}' | '\u{30FB}' | '\u{30FC}' | '\u{30FD}' | '\u{30FE}' | '\u{3000}'
    )
}

impl TryFrom<String> for Kana {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}
impl From<Kana> for String {
    fn from(v: Kana) -> String {
        v.0
    }
}

/// Card symbol (記号): configured per deployment; printable, no spaces or commas (it goes
/// into CSV files), at most 16 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CardSymbol(String);

impl CardSymbol {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let ok = !s.is_empty()
            && s.chars().count() <= 16
            && s.chars()
                .all(|c| !c.is_control() && !c.is_whitespace() && c != ',' && c != '"');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::new(
                "invalid_card_symbol",
                "symbol must be 1 to 16 printable characters without spaces, commas or quotes",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for CardSymbol {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}
impl fmt::Display for CardSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<CardSymbol> for String {
    fn from(v: CardSymbol) -> String {
        v.0
    }
}

/// Card number (番号): 1–16 ASCII digits (zero-padded when issued from the sequence).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if all_digits(s) && s.len() <= 16 {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::new(
                "invalid_card_number",
                "number must be 1 to 16 ASCII digits",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for CardNumber {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}
impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<CardNumber> for String {
    fn from(v: CardNumber) -> String {
        v.0
    }
}

/// Branch number (枝番): `01`–`99`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Branch(u8);

impl Branch {
    pub const MAX: u8 = 99;
    pub fn new(n: u8) -> Option<Self> {
        (1..=Self::MAX).contains(&n).then_some(Self(n))
    }
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let err = || InputError::new("invalid_branch", "branch must be two digits 01 to 99");
        if s.len() != 2 || !all_digits(s) {
            return Err(err());
        }
        s.parse::<u8>().ok().and_then(Self::new).ok_or_else(err)
    }
    pub fn value(self) -> u8 {
        self.0
    }
}
impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}
impl TryFrom<String> for Branch {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}
impl From<Branch> for String {
    fn from(v: Branch) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a valid My Number from eleven digits by appending the check digit.
    fn with_check(first: &str) -> String {
        let d: Vec<u32> = first.bytes().map(|b| u32::from(b - b'0')).collect();
        format!("{first}{}", check_digit(&d))
    }

    #[test]
    fn my_number_check_digit_known_example() {
        // Worked by hand: P1..P11 = 1,0,9,8,7,6,5,4,3,2,1 with weights 2..7,2..6:
        // S = 2+0+36+40+42+42+10+12+12+10+6 = 212, 212 mod 11 = 3, Q = 8.
        assert!(MyNumber::parse("123456789018").is_ok());
        assert_eq!(MyNumber::parse("123456789019").unwrap_err().code, "invalid_my_number");
    }

    #[test]
    fn my_number_shape_and_redaction() {
        assert!(MyNumber::parse("12345678901").is_err());
        assert!(MyNumber::parse("1234567890180").is_err());
        assert!(MyNumber::parse("12345678901a").is_err());
        let n = MyNumber::parse(&with_check("00000000001")).unwrap();
        assert!(!format!("{n:?}").contains("0000"));
    }

    #[test]
    fn check_digit_remainder_zero_and_one_give_zero() {
        // S = 0 → Q = 0.
        assert!(MyNumber::parse("000000000000").is_ok());
        // P1 = 5 only: S = 10, 10 mod 11 = 10 → Q = 1.
        assert!(MyNumber::parse("000000000051").is_ok());
    }

    #[test]
    fn ids_are_one_to_fifteen_digits() {
        assert!(PersonId::parse("1").is_ok());
        assert!(PersonId::parse("123456789012345").is_ok());
        assert_eq!(
            PersonId::parse("1234567890123456").unwrap_err().code,
            "invalid_person_id"
        );
        assert!(PersonId::parse("").is_err());
        assert!(PersonId::parse("12a").is_err());
        assert!(PersonId::parse("１２").is_err());
        assert_eq!(HouseholdId::parse("x").unwrap_err().code, "invalid_household_id");
    }

    #[test]
    fn kana_normalises_half_width() {
        assert_eq!(Kana::parse("ﾔﾏﾀﾞ ﾀﾛｳ").unwrap().as_str(), "ヤマダ　タロウ");
        assert_eq!(Kana::parse("ﾊﾟｰｸ･ｼﾞｪﾆｰ").unwrap().as_str(), "パーク・ジェニー");
        assert_eq!(Kana::parse("ヤマダ　ハナコ").unwrap().as_str(), "ヤマダ　ハナコ");
        assert_eq!(Kana::parse("やまだ").unwrap_err().code, "invalid_kana");
        assert_eq!(Kana::parse("ヤマダA").unwrap_err().code, "invalid_kana");
        assert_eq!(Kana::parse("   ").unwrap_err().code, "invalid_kana");
    }

    #[test]
    fn names_keep_non_bmp_characters() {
        assert_eq!(Name::parse("𠮷野 太郎").unwrap().as_str(), "𠮷野 太郎");
        assert_eq!(Name::parse("  ").unwrap_err().code, "invalid_name");
        assert_eq!(Name::parse("a\u{0007}").unwrap_err().code, "invalid_name");
    }

    #[test]
    fn branch_numbers() {
        assert_eq!(Branch::parse("01").unwrap().to_string(), "01");
        assert!(Branch::parse("00").is_err());
        assert!(Branch::parse("100").is_err());
        assert!(Branch::parse("7").is_err());
        assert_eq!(Branch::new(99).unwrap().to_string(), "99");
        assert!(Branch::new(100).is_none());
    }
}
