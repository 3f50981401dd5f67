use anyhow::{bail, Result};

use super::Trigger;
use crate::process::{self, CommandSpec};

#[derive(Debug, Clone)]
pub struct CommandAction {
    pub spec: CommandSpec,
}

impl CommandAction {
    pub fn describe(&self) -> String {
        shell_words::join(&self.spec.argv)
    }

    pub async fn run(&self, trigger: &Trigger) -> Result<()> {
        let mut spec = self.spec.clone();
        spec.env.extend(trigger.env.iter().cloned());
        if trigger.cwd.is_some() {
            spec.cwd = trigger.cwd.clone();
        }
        let out = process::run(&spec).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.exit.success() {
            tracing::debug!(command = %self.describe(), stdout = %stdout.trim(), stderr = %stderr.trim(), "command succeeded");
            return Ok(());
        }
        bail!(
            "command {:?} failed ({}): {}",
            self.describe(),
            out.exit,
            stderr.trim()
        )
    }
}
