//! 和暦 (Japanese era) dates for the console: staff read birth dates and 異動日 that way on
//! every form and register.

use chrono::{Datelike, NaiveDate};

/// Era names with their first day (the day the era began, by the Gregorian calendar).
const ERAS: [(&str, i32, u32, u32); 5] = [
    ("令和", 2019, 5, 1),
    ("平成", 1989, 1, 8),
    ("昭和", 1926, 12, 25),
    ("大正", 1912, 7, 30),
    ("明治", 1873, 1, 1),
];

/// `令和8年12月2日` (`元年` for the first year); None before 1873, when Japan took the
/// Gregorian calendar and the era year no longer maps simply.
pub fn wareki(d: NaiveDate) -> Option<String> {
    ERAS.iter().find_map(|(name, y, m, day)| {
        let start = NaiveDate::from_ymd_opt(*y, *m, *day)?;
        // Meiji's count runs from 1868: 1873 is Meiji 6.
        let first_year = if *name == "明治" { 1868 } else { *y };
        (d >= start).then(|| {
            let n = d.year() - first_year + 1;
            let year = if n == 1 { "元".to_owned() } else { n.to_string() };
            format!("{name}{year}年{}月{}日", d.month(), d.day())
        })
    })
}

/// `2026-12-02（令和8年12月2日）`: both, as the registers print them.
pub fn both(d: NaiveDate) -> String {
    match wareki(d) {
        Some(w) => format!("{d}（{w}）"),
        None => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn era_boundaries() {
        assert_eq!(wareki(d(2019, 4, 30)).unwrap(), "平成31年4月30日");
        assert_eq!(wareki(d(2019, 5, 1)).unwrap(), "令和元年5月1日");
        assert_eq!(wareki(d(2026, 12, 2)).unwrap(), "令和8年12月2日");
        assert_eq!(wareki(d(1989, 1, 7)).unwrap(), "昭和64年1月7日");
        assert_eq!(wareki(d(1989, 1, 8)).unwrap(), "平成元年1月8日");
        assert_eq!(wareki(d(1926, 12, 24)).unwrap(), "大正15年12月24日");
        assert_eq!(wareki(d(1926, 12, 25)).unwrap(), "昭和元年12月25日");
        assert_eq!(wareki(d(1912, 7, 29)).unwrap(), "明治45年7月29日");
        assert_eq!(wareki(d(1912, 7, 30)).unwrap(), "大正元年7月30日");
        assert_eq!(wareki(d(1872, 12, 31)), None);
        assert_eq!(both(d(1950, 3, 1)), "1950-03-01（昭和25年3月1日）");
    }
}
