//! `validation_params` of a validation task, read by the validator itself.

use serde_json::{Map, Value};

use crate::error::TaskError;

/// What executor_manager asks to validate (`validation_params`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationParams {
    /// Agent kind whose tools are checked (`ClaudeCode` or `Agno`).
    pub shell_type: String,
    /// The image under test, echoed in the result.
    pub image: String,
    /// The shell's display name, echoed in the result.
    pub shell_name: String,
    /// The backend's id of this validation, echoed in every callback (a string or a number,
    /// kept as sent).
    pub validation_id: Value,
}

impl ValidationParams {
    /// Reads `validation_params` of the task dict; absent fields are empty (the validator then
    /// fails the task with a message naming what is missing).
    pub fn from_task(obj: &Map<String, Value>) -> Result<Self, TaskError> {
        let params = match obj.get("validation_params") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(TaskError::WrongType {
                    field: "validation_params",
                    expected: "an object",
                })
            }
        };
        let text = |k: &'static str| -> Result<String, TaskError> {
            match params.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(TaskError::WrongType {
                    field: k,
                    expected: "a string",
                }),
            }
        };
        let validation_id = match params.get("validation_id") {
            None | Some(Value::Null) => Value::String(String::new()),
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            Some(_) => {
                return Err(TaskError::WrongType {
                    field: "validation_id",
                    expected: "a string or a number",
                })
            }
        };
        Ok(Self {
            shell_type: text("shell_type")?,
            image: text("image")?,
            shell_name: text("shell_name")?,
            validation_id,
        })
    }
}
