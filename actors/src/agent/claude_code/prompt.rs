//! The text sent to the CLI for a subtask (contract §13.7): the user-selected-skills preamble,
//! the prompt, and — on a process's first turn — the working directory and project URL.

use std::path::Path;

use crate::task::TaskSpec;

/// The original's preamble naming skills the user picked for this task, verbatim.
fn skills_preamble(skills: &[String]) -> String {
    let list: Vec<String> = skills
        .iter()
        .map(|s| format!("  - **{s}** [USER SELECTED - PRIORITIZE]"))
        .collect();
    format!(
        "## User-Selected Skills\n\nThe user has explicitly selected the following skills for this task. \
         You should **prioritize using these skills** when they are relevant to the task:\n\n{}\n\n\
         **Important**: These skills were specifically chosen by the user. When the task can benefit from \
         these skills, prefer to use them over other approaches.\n\n---\n\n",
        list.join("\n")
    )
}

/// Builds the prompt of one turn.
/// `text` is the user's prompt after workspace preparation (attachment markers rewritten).
pub fn shape(spec: &TaskSpec, text: &str, cwd: &Path, first_turn_of_process: bool) -> String {
    let mut out = String::new();
    if !spec.user_selected_skills.is_empty() {
        out.push_str(&skills_preamble(&spec.user_selected_skills));
        out.push_str("\n\n");
    }
    out.push_str(text);
    if first_turn_of_process {
        out.push_str(&format!("\nCurrent working directory: {}", cwd.display()));
        if let Some(url) = &spec.git_url {
            let url = crate::workspace::git::strip_userinfo(url);
            out.push_str(&format!("\n project url:{url}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_like_the_original() {
        let spec = TaskSpec::from_value(
            &json!({"task_id": 1, "prompt": "hi", "git_url": "https://g/x.git",
                                                "user_selected_skills": ["pdf"]}),
        )
        .unwrap();
        let p = shape(&spec, &spec.prompt, Path::new("/ws/1"), true);
        assert!(p.starts_with("## User-Selected Skills"));
        assert!(p.contains("  - **pdf** [USER SELECTED - PRIORITIZE]"));
        assert!(
            p.ends_with(
                "---\n\n\n\nhi\nCurrent working directory: /ws/1\n project url:https://g/x.git"
            ),
            "{p:?}"
        );
        let plain = TaskSpec::from_value(&json!({"task_id": 1, "prompt": "again"})).unwrap();
        assert_eq!(shape(&plain, "again", Path::new("/ws/1"), false), "again");
    }
}
