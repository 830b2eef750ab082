//! Opt-in progress bars for maps (feature `progress`): drawn on stderr by indicatif, which
//! hides them when stderr is not a terminal. Without the feature these are no-ops.

#[cfg(feature = "progress")]
pub(crate) struct Progress(Option<indicatif::ProgressBar>);

#[cfg(feature = "progress")]
impl Progress {
    pub fn new(enabled: bool, total: Option<usize>, label: &'static str) -> Self {
        if !enabled {
            return Progress(None);
        }
        let target = indicatif::ProgressDrawTarget::stderr();
        let bar = match total {
            Some(n) => {
                let bar = indicatif::ProgressBar::with_draw_target(Some(n as u64), target);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            }
            None => indicatif::ProgressBar::with_draw_target(None, target),
        };
        bar.set_message(label.rsplit("::").next().unwrap_or(label).to_string());
        Progress(Some(bar))
    }

    pub fn inc(&self, n: usize) {
        if let Some(b) = &self.0 {
            b.inc(n as u64);
        }
    }
}

#[cfg(feature = "progress")]
impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(not(feature = "progress"))]
pub(crate) struct Progress;

#[cfg(not(feature = "progress"))]
impl Progress {
    pub fn new(_enabled: bool, _total: Option<usize>, _label: &'static str) -> Self {
        Progress
    }

    pub fn inc(&self, _n: usize) {}
}
