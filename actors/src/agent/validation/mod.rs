//! The image validator (contract §5.6): a `type: "validation"` task checks that a custom base
//! image has the tools an agent kind needs (executor_manager's custom-image flow starts the
//! executor with such a task in `TASK_INFO`). No bot, no prompt, no workspace work: each check
//! is one short `sh -c` command run through [`crate::child`], with a timeout.

pub mod checks;
pub mod params;
pub mod run;

pub use checks::{run_check, CheckResult, CheckSpec};
pub use params::ValidationParams;
pub use run::run_validation;

use serde_json::{json, Value};

/// A validation checks the image, not a workspace: nothing to prepare.
pub const WORKSPACE_NEEDS: crate::workspace::WorkspaceNeeds =
    crate::workspace::WorkspaceNeeds::NOTHING;

/// Message of the terminal callback of a validation that ran (valid or not).
pub const COMPLETED_MESSAGE: &str = "Image validation completed";

/// The checks for a shell type, `None` when the validator does not know it (the original
/// matches the names exactly, case included).
pub fn checks_for(shell_type: &str) -> Option<&'static [CheckSpec]> {
    match shell_type {
        "ClaudeCode" => Some(checks::CLAUDE_CODE),
        "Agno" => Some(checks::AGNO),
        _ => None,
    }
}

/// `result` of a RUNNING callback while checks run (`current_check` is `null` before the first).
pub fn running_result(p: &ValidationParams, current: Option<&str>) -> Value {
    json!({"stage": "running_checks", "validation_id": p.validation_id, "current_check": current})
}

/// `result` of the first RUNNING callback of a validation task (executor_manager drops
/// validation callbacks without a `validation_id`).
pub fn started_result(p: &ValidationParams) -> Value {
    json!({"validation_id": p.validation_id, "stage": "running"})
}

/// `result` of the terminal COMPLETED callback.
pub fn completed_result(p: &ValidationParams, checks: &[CheckResult]) -> Value {
    json!({
        "stage": "completed",
        "validation_id": p.validation_id,
        "validation_result": {
            "valid": checks.iter().all(CheckResult::passed),
            "checks": checks,
            "errors": [],
            "shell_name": p.shell_name,
            "shell_type": p.shell_type,
            "image": p.image,
        },
    })
}

/// `result` of a terminal FAILED callback (the original's `process()` shape).
pub fn failed_result(p: &ValidationParams, message: &str) -> Value {
    json!({
        "stage": "failed",
        "validation_id": p.validation_id,
        "validation_result": {"valid": false, "checks": [], "errors": [message]},
    })
}

/// Why a validation cannot run: the shell type is missing or unknown.
pub fn unknown_shell_message(p: &ValidationParams) -> String {
    if p.shell_type.is_empty() {
        "Image validation failed: validation_params.shell_type is required (ClaudeCode or Agno)"
            .to_string()
    } else {
        format!(
            "Image validation failed: unknown shell_type '{}' (the validator checks ClaudeCode or Agno)",
            p.shell_type
        )
    }
}

/// Progress of the callback announcing check `index` of `total` (the original's
/// `70 + int(index / total * 25)`).
pub fn check_progress(index: usize, total: usize) -> u8 {
    let total = total.max(1);
    (70 + (index * 25) / total).min(99) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_matches_the_original() {
        assert_eq!(check_progress(0, 3), 70);
        assert_eq!(check_progress(1, 3), 78);
        assert_eq!(check_progress(2, 3), 86);
        assert_eq!(check_progress(1, 2), 82);
    }

    #[test]
    fn shell_types_are_exact() {
        assert!(checks_for("ClaudeCode").is_some());
        assert!(checks_for("Agno").is_some());
        assert!(checks_for("claudecode").is_none());
        assert!(checks_for("Dify").is_none());
    }
}
