//! A decode step that ends on the GPU: after the forward pass, the chooser kernel combines
//! each method's rows and draws its token there (`backend::webgpu::choose`), so a step
//! reads back a few words instead of a vocabulary-sized row per sequence.

use super::{GpuModel, MAX_LAST};
use crate::backend::webgpu::abi::{BELOW_ONE, MAX_TOP_N, NO_ROW};
use crate::backend::webgpu::choose::{Choice, ChooseParams, Chooser};
use crate::error::Result;
use crate::model::{ChosenToken, SeqId, StepOutput, TokenRequest};

/// Where each request's answers sit among the chooser's: the drawn token, then the base
/// and pref rows' own top candidates when logprobs were asked for.
struct RequestRows {
    token: usize,
    base: Option<usize>,
    pref: Option<usize>,
}

fn row(index: Option<usize>) -> u32 {
    index.map_or(NO_ROW, |i| i as u32)
}

/// The chooser's parameter blocks for `requests`.
fn chooser_params(requests: &[TokenRequest]) -> (Vec<ChooseParams>, Vec<RequestRows>) {
    let mut params = Vec::new();
    let mut rows = Vec::with_capacity(requests.len());
    for r in requests {
        let top_n = r.top_n.min(MAX_TOP_N) as u32;
        let token = params.len();
        params.push(ChooseParams {
            base_row: row(r.base),
            pref_row: row(r.pref),
            k: r.strength,
            temperature: r.temperature as f32,
            top_k: r.top_k.map_or(0, |k| k.min(u32::MAX as usize) as u32),
            top_p: r.top_p.map_or(1.0, |p| p as f32),
            u: r.uniform.map_or(0.0, |u| (u as f32).min(BELOW_ONE)),
            top_n,
        });
        // One row alone, greedy: only its candidates are wanted.
        let mut alone = |index: Option<usize>, as_base: bool| {
            let i = index.filter(|_| top_n > 0)?;
            params.push(ChooseParams {
                base_row: if as_base { i as u32 } else { NO_ROW },
                pref_row: if as_base { NO_ROW } else { i as u32 },
                top_n,
                ..ChooseParams::default()
            });
            Some(params.len() - 1)
        };
        let base = alone(r.base, true);
        let pref = alone(r.pref, false);
        rows.push(RequestRows { token, base, pref });
    }
    (params, rows)
}

impl GpuModel {
    /// `forward_choose`: a one-pass decode step whose last rows are the batch entries in
    /// order; anything else (a prefill) returns rows.
    pub(super) async fn choose_gpu(
        &mut self,
        batch: &[(SeqId, &[u32])],
        requests: &[TokenRequest],
    ) -> Result<StepOutput> {
        let one_pass = batch.len() <= MAX_LAST && batch.iter().all(|(_, t)| t.len() == 1);
        if !one_pass || requests.is_empty() || !self.choose_on_gpu {
            return Ok(StepOutput::Rows(self.forward_gpu(batch).await?));
        }
        self.check_call(batch)?;
        let t0 = self.profile.now();
        self.submit(batch)?;
        let (params, rows) = chooser_params(requests);
        let chooser = self.chooser.get_or_insert_with(|| Chooser::new(&self.ctx.device));
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        chooser.encode(
            &self.ctx.device,
            &self.ctx.queue,
            &mut enc,
            &self.bufs.logits,
            self.cfg.vocab_size as u32,
            &params,
        );
        self.ctx.queue.submit([enc.finish()]);
        let t1 = self.profile.now();
        let words = self.ctx.read_f32_async(chooser.readback(), Chooser::result_words(params.len())).await?;
        self.profile.add_timing(t0, t1);
        self.advance(batch);
        let choices = Chooser::parse(&words, params.len());
        let top = |row: Option<usize>| match row.map(|i| &choices[i]) {
            Some(Choice::Token { top, .. }) => Some(top.clone()),
            Some(_) => None,
            None => Some(Vec::new()),
        };
        let mut chosen = Vec::with_capacity(rows.len());
        for s in &rows {
            let (Choice::Token { id, top: top_combined }, Some(top_base), Some(top_pref)) =
                (&choices[s.token], top(s.base), top(s.pref))
            else {
                // A non-finite row or a nucleus too wide for the kernel: the engine takes the
                // rows (they were copied to the readback buffer with the pass) and reports or
                // draws on the CPU with the same uniforms.
                let vocab = self.cfg.vocab_size;
                let all = self.ctx.read_f32_async(&self.bufs.staging, batch.len() * vocab).await?;
                return Ok(StepOutput::Rows(all.chunks_exact(vocab).map(|c| c.to_vec()).collect()));
            };
            chosen.push(ChosenToken { id: *id, top_base, top_pref, top_combined: top_combined.clone() });
        }
        Ok(StepOutput::Tokens(chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::{chooser_params, NO_ROW};
    use crate::model::TokenRequest;

    #[test]
    fn candidates_of_single_rows_ride_along_only_when_asked() {
        let r = TokenRequest {
            base: Some(0),
            pref: Some(1),
            strength: 4.0 / 3.0,
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.9),
            uniform: Some(0.999_999_999),
            top_n: 0,
        };
        let (p, s) = chooser_params(&[r, TokenRequest { base: None, top_n: 5, ..r }]);
        assert_eq!(p.len(), 3);
        assert_eq!((s[0].token, s[0].base, s[0].pref), (0, None, None));
        assert_eq!((s[1].token, s[1].base, s[1].pref), (1, None, Some(2)));
        assert!(p[0].u < 1.0, "a uniform below 1 stays below 1 in f32");
        assert_eq!((p[0].base_row, p[0].pref_row, p[0].top_k), (0, 1, 40));
        assert_eq!((p[2].base_row, p[2].pref_row, p[2].temperature, p[2].top_n), (NO_ROW, 1, 0.0, 5));
    }
}
