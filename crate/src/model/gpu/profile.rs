//! Measuring the GPU model, natively, for diagnosis (off unless asked for):
//! AMULET_GPU_PROFILE=1 submits every step alone and waits for it, summing wall time per
//! kernel; AMULET_GPU_PROFILE=2 sums, per forward call, the time spent recording and
//! submitting and the time spent waiting for results. Both print when the model is dropped.

#[cfg(not(target_arch = "wasm32"))]
use super::plan::{record, Step};
#[cfg(not(target_arch = "wasm32"))]
use crate::backend::webgpu::GpuContext;

pub(super) struct Profiler {
    /// AMULET_GPU_PROFILE=1: (kernel label, dispatches, seconds). Slow.
    steps: Option<Vec<(&'static str, usize, f64)>>,
    /// AMULET_GPU_PROFILE=2: (calls, seconds recording + submitting, seconds waiting).
    timing: Option<(usize, f64, f64)>,
}

impl Profiler {
    pub fn from_env() -> Self {
        let mode = std::env::var("AMULET_GPU_PROFILE");
        Profiler {
            steps: mode.as_ref().is_ok_and(|v| v == "1").then(Vec::new),
            timing: mode.as_ref().is_ok_and(|v| v == "2").then_some((0, 0.0, 0.0)),
        }
    }

    /// Whether every step is submitted alone (then nothing is recorded ahead).
    pub fn per_step(&self) -> bool {
        self.steps.is_some()
    }

    /// Only with AMULET_GPU_PROFILE=2 (natively): Instant does not exist in browsers.
    pub fn now(&self) -> Option<std::time::Instant> {
        self.timing.is_some().then(std::time::Instant::now)
    }

    /// Adds one call's recording (t0..t1) and waiting (t1..now) times.
    pub fn add_timing(&mut self, t0: Option<std::time::Instant>, t1: Option<std::time::Instant>) {
        if let (Some((n, record, wait)), Some(t0), Some(t1)) = (self.timing.as_mut(), t0, t1) {
            *n += 1;
            *record += (t1 - t0).as_secs_f64();
            *wait += t1.elapsed().as_secs_f64();
        }
    }

    /// AMULET_GPU_PROFILE=1: runs `steps` for `n` rows (`chunks` attention chunks), each
    /// submitted alone and waited for, and adds its wall time to its kernel's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_steps(&mut self, ctx: &GpuContext, steps: &[Step], n: usize, chunks: usize) {
        let Some(profile) = self.steps.as_mut() else { return };
        let dev = &ctx.device;
        for s in steps.iter().filter(|_| n > 0) {
            let t0 = std::time::Instant::now();
            let mut enc = dev.create_command_encoder(&Default::default());
            record(&mut enc, std::slice::from_ref(s), n, chunks);
            ctx.queue.submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely()).ok();
            let dt = t0.elapsed().as_secs_f64();
            match profile.iter_mut().find(|e| e.0 == s.label) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += dt;
                }
                None => profile.push((s.label, 1, dt)),
            }
        }
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Some((n, record, wait)) = self.timing {
            let per = |t: f64| t * 1e3 / n.max(1) as f64;
            eprintln!(
                "WebGPU: {n} forward calls; per call {:.3} ms recording + submitting, {:.3} ms waiting for the GPU and the readback",
                per(record),
                per(wait)
            );
        }
        if let Some(p) = &self.steps {
            let total: f64 = p.iter().map(|e| e.2).sum();
            eprintln!("WebGPU profile (each step submitted alone): {:.1} ms in all", total * 1e3);
            for (label, n, t) in p {
                eprintln!("  {label:<12} {n:>7} dispatches {:>10.1} ms {:>5.1}%", t * 1e3, 100.0 * t / total);
            }
        }
    }
}
