//! The staff console's presentation (console.md), free of HTTP: Japanese labels and refusal
//! messages, 和暦 dates, and the eligibility timeline chart drawn as SVG. The pages that use
//! them are in `http::console`; the templates in `templates/console/`.

pub mod chart;
pub mod forms;
pub mod labels;
pub mod wareki;
