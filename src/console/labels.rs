//! Japanese names of what the console shows: event types, reasons of acquisition and loss,
//! event statuses, and the ledger's refusals (by error code) with the form field they concern.

/// 異動の種類 by event type.
pub fn event_type(t: &str) -> &'static str {
    match t {
        "registered" => "登録",
        "moved_in" => "転入",
        "moved_out" => "転出",
        "born" => "出生",
        "died" => "死亡",
        "employee_insurance_joined" => "社保加入",
        "employee_insurance_left" => "社保離脱",
        "welfare_started" => "生活保護開始",
        "welfare_ended" => "生活保護廃止",
        "nhi_union_joined" => "国保組合加入",
        "nhi_union_left" => "国保組合脱退",
        "late_elderly_disability_certified" => "後期高齢者障害認定",
        "late_elderly_disability_withdrawn" => "後期高齢者障害認定撤回",
        "foreign_resident_excluded" => "外国人適用除外",
        "foreign_resident_included" => "外国人適用開始",
        "name_changed" => "氏名変更",
        "household_changed" => "世帯変更",
        "document_collected" => "資格証明書類回収",
        "disclosure_restricted" => "閲覧制限（DV等）",
        "disclosure_restriction_lifted" => "閲覧制限解除",
        "late_elderly_age_reached" => "75歳到達",
        "corrected" => "訂正",
        "rescinded" => "取消",
        "household_head_changed" => "世帯主変更",
        "nhi_head_designated" => "国保世帯主指定",
        "nhi_head_designation_revoked" => "国保世帯主指定取消",
        "card_number_assigned" => "記号番号付番",
        "branch_number_issued" => "枝番付番",
        _ => "その他",
    }
}

/// 資格取得事由.
pub fn acquisition(reason: &str) -> &'static str {
    match reason {
        "born" => "出生",
        "moved_in" => "転入",
        "employee_insurance_left" => "社保離脱",
        "welfare_ended" => "生保廃止",
        "nhi_union_left" => "組合脱退",
        "late_elderly_disability_withdrawn" => "障害認定撤回",
        "foreign_resident_included" => "適用開始",
        "household_changed" => "世帯変更",
        _ => "取得",
    }
}

/// 資格喪失事由.
pub fn loss(reason: &str) -> &'static str {
    match reason {
        "died" => "死亡",
        "welfare_started" => "生保開始",
        "employee_insurance_joined" => "社保加入",
        "nhi_union_joined" => "組合加入",
        "late_elderly" => "75歳到達",
        "foreign_resident_excluded" => "適用除外",
        "moved_out" => "転出",
        "moved_within_prefecture" => "県内転出",
        "household_changed" => "世帯変更",
        _ => "喪失",
    }
}

/// Event status.
pub fn status(s: &str) -> &'static str {
    match s {
        "in_force" => "有効",
        "corrected" => "訂正済",
        "rescinded" => "取消済",
        _ => "",
    }
}

/// 転入元・転出先.
pub fn place(p: &str) -> &'static str {
    match p {
        "other_prefecture" => "他都道府県",
        "same_prefecture" => "都道府県内",
        "abroad" => "国外",
        _ => "",
    }
}

pub fn sex(s: &str) -> &'static str {
    match s {
        "1" => "男",
        "2" => "女",
        _ => "",
    }
}

/// A refusal of the ledger in Japanese, with the field it concerns (None: the whole form).
/// `message` is the ledger's own (English) message; a field it names is the field shown.
pub fn refusal(code: &str, message: &str, fields: &[&str]) -> (Option<String>, String) {
    let japanese = match code {
        "invalid_date" => "日付が正しくありません（YYYY-MM-DD の形式で、暦にある日を入力してください）",
        "missing_field" => "入力してください",
        "invalid_field" => "入力内容が正しくありません",
        "unknown_field" => "この異動では使わない項目です",
        "invalid_kana" => "カナ氏名はカタカナ・長音（ー）・中点（・）・空白で入力してください",
        "invalid_name" => "氏名を入力してください",
        "invalid_sex" => "性別を選んでください",
        "invalid_person_id" | "invalid_household_id" => "番号は1〜15桁の数字で入力してください",
        "invalid_my_number" => "個人番号が正しくありません（12桁・検査用数字）",
        "invalid_place" => "転入元・転出先を選んでください",
        "invalid_card_symbol" | "invalid_card_number" | "invalid_branch" => "記号・番号・枝番の形式が正しくありません",
        "future_date" => "未来の日付は入力できません（転出予定日は31日先まで）",
        "reported_date_in_future" => "届出日に未来の日付は入力できません",
        "reported_before_effective" => "届出日が異動日より前になっています",
        "before_birth" => "異動日が生年月日より前です",
        "after_death" => "死亡日より後の異動は登録できません",
        "already_dead" => "既に死亡が登録されています",
        "already_registered" => "既に登録されている方です",
        "person_not_registered" | "person_not_found" => "登録されていない方です",
        "already_resident" => "既に住民として登録されています（転入できません）",
        "not_resident" => "住民ではありません（転出できません）",
        "already_born" => "既に出生・転入が登録されています",
        "birth_date_mismatch" => "異動日が登録された生年月日と一致しません",
        "exclusion_already_started" => "この適用除外は既に開始しています",
        "exclusion_not_started" => "この適用除外は開始していません",
        "not_insured" => "この日に国保の被保険者ではありません",
        "target_not_found" => "訂正・取消の対象の異動がありません",
        "target_is_correction" => "訂正・取消そのものは対象にできません",
        "target_rescinded" => "対象の異動は既に取り消されています",
        "replacement_type_mismatch" => "訂正後の異動は対象と同じ種類にしてください",
        "cannot_rescind_registration" => "登録は取り消せません",
        "system_event_only" => "この異動はシステムが記録します",
        "disclosure_restricted" => "既に閲覧制限中です",
        "disclosure_not_restricted" => "閲覧制限はかかっていません",
        "household_not_found" => "世帯が見つかりません",
        "not_a_member" => "この世帯の世帯員ではありません",
        "designation_not_active" => "国保世帯主の指定はありません",
        "card_numbers_exhausted" | "branch_numbers_exhausted" => {
            "採番できる番号がありません。システム管理者に連絡してください"
        }
        "stale_version" | "version_conflict" => "他の職員が先に更新しました。画面を開き直してください",
        "idempotency_key_reused" => "この入力は既に別の内容で登録されています",
        _ => "この異動は登録できません",
    };
    // A field the message names: at its start, or anywhere when the name cannot be an
    // ordinary word (`effective_date`, `replacement.to`).
    let words: Vec<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| !w.is_empty())
        .collect();
    let names = |w: &str, f: &str| w == f || w.ends_with(&format!(".{f}")) && !f.contains('.');
    let field = fields
        .iter()
        .filter(|f| {
            words.first().is_some_and(|w| names(w, f))
                || ((f.contains('_') || f.contains('.')) && words.iter().any(|w| names(w, f)))
        })
        .max_by_key(|f| f.len())
        .map(|f| (*f).to_owned())
        .or_else(|| {
            // Rules of the history concern the day of the change.
            matches!(
                code,
                "future_date"
                    | "before_birth"
                    | "after_death"
                    | "birth_date_mismatch"
                    | "not_insured"
                    | "already_resident"
                    | "not_resident"
                    | "exclusion_already_started"
                    | "exclusion_not_started"
            )
            .then(|| "effective_date".to_owned())
            .filter(|f| fields.contains(&f.as_str()))
        })
        .or_else(|| {
            matches!(code, "reported_date_in_future" | "reported_before_effective")
                .then(|| "reported_date".to_owned())
                .filter(|f| fields.contains(&f.as_str()))
        });
    (field, format!("{japanese}（{code}）"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_field() {
        let fields = ["effective_date", "reported_date", "name_kana", "name"];
        let (f, m) = refusal("invalid_kana", "name_kana must be katakana", &fields);
        assert_eq!(f.as_deref(), Some("name_kana"));
        assert!(m.starts_with("カナ氏名"));
        let (f, _) = refusal("after_death", "the person died on 2020-01-01", &fields);
        assert_eq!(f.as_deref(), Some("effective_date"));
        let (f, _) = refusal("invalid_date", "reported_date must be a date YYYY-MM-DD", &fields);
        assert_eq!(f.as_deref(), Some("reported_date"));
        // "name" in a sentence is a word, not the field.
        let (f, _) = refusal("invalid_kana", "a kana name may contain only katakana", &fields);
        assert_eq!(f, None);
        let (f, _) = refusal("missing_field", "name is required", &fields);
        assert_eq!(f.as_deref(), Some("name"));
        let (f, m) = refusal("whatever_new", "something", &fields);
        assert_eq!(f, None);
        assert!(m.contains("whatever_new"));
    }
}
