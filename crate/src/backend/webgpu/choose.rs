//! The "choose" kernel (shaders/choose.wgsl): Amulet's combine of the base and preference
//! logit rows and the next-token choice (greedy, temperature, top-k, top-p, plus the top-n
//! alternatives), one workgroup per request, so a decode step reads back a few words per
//! request instead of whole vocabulary rows.
//!
//! The sampler's uniform is drawn on the CPU (`Sampler::next_uniform`) and travels with
//! the request, so when the GPU cannot decide (a non-finite row, a nucleus larger than
//! `MAX_SORTED`) the CPU can read the rows and replay the same draw (`sample_with`).
//! The numbers the kernel shares with this file (NO_ROW, MAX_TOP_N, MAX_SORTED, the result
//! record) are in `abi`.

use bytemuck::{Pod, Zeroable};

use super::abi::{
    prelude, CHOOSE_HEADER_WORDS, CHOOSE_WORDS, MAX_TOP_N, STATUS_NON_FINITE, STATUS_TOKEN, STATUS_TOO_MANY,
};

const SHADER: &str = include_str!("shaders/choose.wgsl");
/// Workgroups per dispatch dimension that WebGPU guarantees.
const MAX_REQUESTS: usize = 65_535;

/// One request: which rows to combine and how to choose. Mirrors `Request` in choose.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug)]
pub struct ChooseParams {
    /// Row index into the logits buffer, or NO_ROW.
    pub base_row: u32,
    /// Row index into the logits buffer, or NO_ROW.
    pub pref_row: u32,
    /// Extrapolation strength when both rows are given: pref + k·(pref − base).
    pub k: f32,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off (also off when >= vocab).
    pub top_k: u32,
    /// >= 1 = off.
    pub top_p: f32,
    /// The CPU sampler's uniform in [0, 1) for this step (`TokenRequest::uniform`; ignored
    /// when greedy). `u`, not `uniform`: WGSL reserves that word (an address space).
    pub u: f32,
    /// 0..=MAX_TOP_N: also return the n most likely ids of the combined row with softmax
    /// probabilities (temperature 1, whole row).
    pub top_n: u32,
}

/// What the kernel decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// `top`: most likely first, lower id on ties; probabilities as
    /// `sample::top_candidates` gives them.
    Token { id: u32, top: Vec<(u32, f32)> },
    /// NaN or ±inf in the combined row: the caller reads the rows back and reports.
    NonFinite,
    /// The top-p nucleus (or top-k set) does not fit MAX_SORTED: the caller samples on the
    /// CPU with the same uniform.
    TooManyCandidates,
}

/// The per-dispatch uniform (Info in choose.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Info {
    vocab: u32,
    n_requests: u32,
    _pad: [u32; 2],
}

pub struct Chooser {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    info: wgpu::Buffer,
    /// Requests the three buffers below have room for.
    capacity: usize,
    params: wgpu::Buffer,
    results: wgpu::Buffer,
    readback: wgpu::Buffer,
}

fn layout_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }
}

fn buffer(device: &wgpu::Device, label: &str, size: usize, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: size as u64,
        usage,
        mapped_at_creation: false,
    })
}

impl Chooser {
    pub fn new(device: &wgpu::Device) -> Self {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("choose"),
            entries: &[
                layout_entry(0, Uniform),
                layout_entry(1, Storage { read_only: true }),
                layout_entry(2, Storage { read_only: true }),
                layout_entry(3, Storage { read_only: false }),
            ],
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("choose"),
            source: wgpu::ShaderSource::Wgsl(format!("{}\n{SHADER}", prelude()).into()),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("choose"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("choose"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            // The kernel initialises the workgroup memory it reads.
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let info = buffer(
            device,
            "choose info",
            size_of::<Info>(),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let (params, results, readback) = Self::buffers(device, 1);
        Chooser { pipeline, layout, info, capacity: 1, params, results, readback }
    }

    fn buffers(device: &wgpu::Device, capacity: usize) -> (wgpu::Buffer, wgpu::Buffer, wgpu::Buffer) {
        use wgpu::BufferUsages as U;
        let result_bytes = capacity * CHOOSE_WORDS * 4;
        (
            buffer(device, "choose params", capacity * size_of::<ChooseParams>(), U::STORAGE | U::COPY_DST),
            buffer(device, "choose results", result_bytes, U::STORAGE | U::COPY_SRC),
            buffer(device, "choose readback", result_bytes, U::MAP_READ | U::COPY_DST),
        )
    }

    /// Records the dispatch (one workgroup per request) over `logits` (rows × vocab f32,
    /// a STORAGE buffer, bound whole) and the copy of its results into `readback`.
    /// The requests go in with `queue.write_buffer`, so submit before the next `encode`;
    /// the readback must be unmapped by then. Every request needs a base or a pref row.
    pub fn encode(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        enc: &mut wgpu::CommandEncoder,
        logits: &wgpu::Buffer,
        vocab: u32,
        requests: &[ChooseParams],
    ) {
        let n = requests.len();
        if n == 0 {
            return;
        }
        assert!(n <= MAX_REQUESTS, "{n} choose requests exceed one dispatch ({MAX_REQUESTS})");
        assert!(vocab > 0, "choosing from an empty vocabulary");
        if n > self.capacity {
            self.capacity = n.next_power_of_two();
            (self.params, self.results, self.readback) = Self::buffers(device, self.capacity);
        }
        queue.write_buffer(&self.info, 0, bytemuck::bytes_of(&Info { vocab, n_requests: n as u32, _pad: [0; 2] }));
        queue.write_buffer(&self.params, 0, bytemuck::cast_slice(requests));
        let entries: Vec<wgpu::BindGroupEntry> = [&self.info, &self.params, logits, &self.results]
            .iter()
            .enumerate()
            .map(|(binding, b)| wgpu::BindGroupEntry { binding: binding as u32, resource: b.as_entire_binding() })
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("choose"),
            layout: &self.layout,
            entries: &entries,
        });
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("choose"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(n as u32, 1, 1);
        }
        enc.copy_buffer_to_buffer(&self.results, 0, &self.readback, 0, (Self::result_words(n) * 4) as u64);
    }

    /// The MAP_READ buffer the results land in.
    pub fn readback(&self) -> &wgpu::Buffer {
        &self.readback
    }

    /// f32-sized words to read back for `n` requests.
    pub fn result_words(n: usize) -> usize {
        n * CHOOSE_WORDS
    }

    /// Decodes the words read back (u32 bit patterns in f32 clothing) into one Choice per
    /// request.
    pub fn parse(words: &[f32], n: usize) -> Vec<Choice> {
        assert!(words.len() >= Self::result_words(n), "{} result words for {n} requests", words.len());
        words
            .chunks_exact(CHOOSE_WORDS)
            .take(n)
            .map(|w| match w[0].to_bits() {
                STATUS_TOKEN => {
                    let n_top = (w[2].to_bits() as usize).min(MAX_TOP_N);
                    let at = |j: usize| CHOOSE_HEADER_WORDS + 2 * j;
                    let top = (0..n_top).map(|j| (w[at(j)].to_bits(), w[at(j) + 1])).collect();
                    Choice::Token { id: w[1].to_bits(), top }
                }
                STATUS_TOO_MANY => Choice::TooManyCandidates,
                STATUS_NON_FINITE => Choice::NonFinite,
                // Unexpected words: let the caller look at the rows too.
                _ => Choice::NonFinite,
            })
            .collect()
    }
}
