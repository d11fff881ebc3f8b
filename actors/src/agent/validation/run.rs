//! One validation, start to end: the callbacks of contract §4.4 in order, one terminal.

use std::time::Duration;

use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};

use super::{
    check_progress, checks_for, completed_result, failed_result, run_check, running_result,
    unknown_shell_message, ValidationParams, COMPLETED_MESSAGE,
};

/// Runs the checks of `params.shell_type`, sending every callback (RUNNING progress, then one
/// terminal) through `emit`; returns the terminal status. `timeout` bounds each check.
pub async fn run_validation(
    ctx: &SubtaskContext,
    params: &ValidationParams,
    timeout: Duration,
    emit: &(dyn Fn(CallbackPayload) + Send + Sync),
) -> TaskStatus {
    let Some(checks) = checks_for(&params.shell_type) else {
        let message = unknown_shell_message(params);
        tracing::warn!("task {}: {message}", ctx.task_id);
        emit(ctx.payload(
            100,
            TaskStatus::Failed,
            message.clone(),
            Some(failed_result(params, &message)),
        ));
        return TaskStatus::Failed;
    };
    emit(ctx.payload(
        70,
        TaskStatus::Running,
        "Running dependency checks",
        Some(running_result(params, None)),
    ));
    let mut results = Vec::with_capacity(checks.len());
    for (i, check) in checks.iter().enumerate() {
        emit(ctx.payload(
            check_progress(i, checks.len()),
            TaskStatus::Running,
            format!("Checking {}", check.name),
            Some(running_result(params, Some(check.name))),
        ));
        results.push(run_check(check, timeout).await);
    }
    let valid = results.iter().all(super::CheckResult::passed);
    tracing::info!(
        "task {}: image validation completed: valid={valid}, checks={}",
        ctx.task_id,
        results.len()
    );
    emit(ctx.payload(
        100,
        TaskStatus::Completed,
        COMPLETED_MESSAGE,
        Some(completed_result(params, &results)),
    ));
    TaskStatus::Completed
}
