//! The compute pipelines, their bind-group layouts and parameter blocks. Pipelines are
//! specialised by override constants (weight format, matvec input mode) and built once.
//! Every module is the WGSL prelude (`abi::prelude`), common.wgsl, then the kernel's files.

use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};

use super::abi::{prelude, Format, MatvecInput};

const COMMON: &str = include_str!("shaders/common.wgsl");
const QUANT: &str = include_str!("shaders/quant.wgsl");
/// The Params, bindings and input read matvec.wgsl and matmul.wgsl share.
const MATVEC_IO: &str = include_str!("shaders/matvec_io.wgsl");
const MATVEC: &str = include_str!("shaders/matvec.wgsl");
const MATMUL: &str = include_str!("shaders/matmul.wgsl");
const EMBED: &str = include_str!("shaders/embed.wgsl");
const GATHER: &str = include_str!("shaders/gather.wgsl");
const ROPE_CACHE: &str = include_str!("shaders/rope_cache.wgsl");
const ATTENTION: &str = include_str!("shaders/attention.wgsl");
const NORM: &str = include_str!("shaders/norm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct MatvecParams {
    pub k: u32,
    pub n: u32,
    pub n_off: u32,
    pub x_stride: u32,
    pub y_stride: u32,
    pub up_off: u32,
    pub accumulate: u32,
    pub has_bias: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct EmbedParams {
    pub d: u32,
    pub row0: u32,
    pub n: u32,
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct GatherParams {
    pub d: u32,
    pub count: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct RopeCacheParams {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub rope_half: u32,
    pub layer: u32,
    pub n_layer: u32,
    pub interleaved: u32,
    pub qk_norm: u32,
    pub eps: f32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct AttentionParams {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub layer: u32,
    pub n_layer: u32,
    pub window: u32,
    pub max_chunks: u32,
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct NormParams {
    pub d: u32,
    pub eps: f32,
    pub accumulate: u32,
    pub _pad: u32,
}

/// The per-pass uniform every kernel reads its row count from.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct PassInfo {
    pub n_rows: u32,
    pub _pad: [u32; 3],
}

#[derive(Clone, Copy)]
enum Access {
    Uniform,
    Read,
    ReadWrite,
}

pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub struct Kernels {
    device: wgpu::Device,
    /// Lanes per row of W in the matvec (LANES in matvec.wgsl; WORKGROUP / LANES rows a
    /// workgroup).
    pub matvec_lanes: u32,
    matvec_layout: wgpu::BindGroupLayout,
    embed_layout: wgpu::BindGroupLayout,
    matvec_module: wgpu::ShaderModule,
    embed_module: wgpu::ShaderModule,
    matvec: HashMap<(Format, MatvecInput), Kernel>,
    matmul: HashMap<(Format, MatvecInput), Kernel>,
    embed: HashMap<Format, Kernel>,
    pub gather: Kernel,
    pub rope_cache: Kernel,
    pub attention: Kernel,
    pub attention_merge: Kernel,
    pub norm: Kernel,
}

fn layout(device: &wgpu::Device, name: &str, bindings: &[(u32, Access)]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match access {
                    Access::Uniform => wgpu::BufferBindingType::Uniform,
                    Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries })
}

/// A shader module: the kernel's source after the prelude and common.wgsl.
fn module(device: &wgpu::Device, name: &str, source: &str) -> wgpu::ShaderModule {
    let prelude = prelude();
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(format!("{prelude}\n{COMMON}\n{source}").into()),
    })
}

fn pipeline(
    device: &wgpu::Device,
    name: &str,
    module: &wgpu::ShaderModule,
    layout: &wgpu::BindGroupLayout,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    entry_pipeline(device, name, module, "main", layout, constants)
}

fn entry_pipeline(
    device: &wgpu::Device,
    name: &str,
    module: &wgpu::ShaderModule,
    entry: &str,
    layout: &wgpu::BindGroupLayout,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(name),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&pl),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
        cache: None,
    })
}

fn kernel(device: &wgpu::Device, name: &str, source: &str, bindings: &[(u32, Access)]) -> Kernel {
    let layout = layout(device, name, bindings);
    let module = module(device, name, source);
    Kernel { pipeline: pipeline(device, name, &module, &layout, &[]), layout }
}

impl Kernels {
    pub fn new(device: &wgpu::Device, software: bool) -> Self {
        use Access::*;
        let matvec_layout = layout(
            device,
            "matvec",
            &[(0, Uniform), (1, Read), (2, Read), (3, Read), (4, ReadWrite), (5, Read), (6, Uniform)],
        );
        let embed_layout =
            layout(device, "embed", &[(0, Uniform), (1, Read), (2, Read), (3, Read), (4, ReadWrite), (5, Uniform)]);
        let attention = module(device, "attention", ATTENTION);
        let attention_layout = layout(
            device,
            "attention",
            &[(0, Uniform), (1, Read), (2, Read), (3, Read), (4, Read), (5, ReadWrite), (6, Uniform)],
        );
        let merge_layout =
            layout(device, "attention merge", &[(0, Uniform), (2, Read), (5, ReadWrite), (6, Uniform), (7, ReadWrite)]);
        let lanes = std::env::var("AMULET_MATVEC_LANES").ok().and_then(|v| v.parse().ok());
        Kernels {
            device: device.clone(),
            matvec_lanes: lanes.unwrap_or(if software { 1 } else { 32 }),
            matvec_module: module(device, "matvec", &format!("{QUANT}\n{MATVEC_IO}\n{MATVEC}")),
            embed_module: module(device, "embed", &format!("{QUANT}\n{EMBED}")),
            matvec_layout,
            embed_layout,
            matvec: HashMap::new(),
            matmul: HashMap::new(),
            embed: HashMap::new(),
            gather: kernel(device, "gather", GATHER, &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)]),
            rope_cache: kernel(
                device,
                "rope_cache",
                ROPE_CACHE,
                &[
                    (0, Uniform),
                    (1, ReadWrite),
                    (2, Read),
                    (3, ReadWrite),
                    (4, ReadWrite),
                    (5, Read),
                    (6, Read),
                    (7, Uniform),
                ],
            ),
            attention: Kernel {
                pipeline: pipeline(device, "attention", &attention, &attention_layout, &[]),
                layout: attention_layout,
            },
            attention_merge: Kernel {
                pipeline: entry_pipeline(device, "attention merge", &attention, "merge", &merge_layout, &[]),
                layout: merge_layout,
            },
            norm: kernel(device, "norm", NORM, &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (4, Uniform)]),
        }
    }

    /// The matvec pipeline for a weight format and input mode (built on first use).
    pub fn matvec(&mut self, format: Format, input: MatvecInput) -> &Kernel {
        let (device, module, layout, lanes) =
            (&self.device, &self.matvec_module, &self.matvec_layout, self.matvec_lanes);
        self.matvec.entry((format, input)).or_insert_with(|| Kernel {
            pipeline: pipeline(
                device,
                "matvec",
                module,
                layout,
                &[("FORMAT", format as u32 as f64), ("INPUT", input as u32 as f64), ("LANES", lanes as f64)],
            ),
            layout: layout.clone(),
        })
    }

    /// The tiled matmul pipeline (matmul.wgsl) for a weight format and input mode: the
    /// matvec's computation for many rows, with the same bind-group layout object (one
    /// bind group serves both). Grid: (ceil(n / MATMUL_TILE_N), 1, ceil(n_rows /
    /// MATMUL_TILE_ROWS)). Built on first use.
    pub fn matmul(&mut self, format: Format, input: MatvecInput) -> &Kernel {
        let (device, layout) = (&self.device, &self.matvec_layout);
        self.matmul.entry((format, input)).or_insert_with(|| {
            let module = module(device, "matmul", &format!("{QUANT}\n{MATVEC_IO}\n{MATMUL}"));
            Kernel {
                pipeline: pipeline(
                    device,
                    "matmul",
                    &module,
                    layout,
                    &[("FORMAT", format as u32 as f64), ("INPUT", input as u32 as f64)],
                ),
                layout: layout.clone(),
            }
        })
    }

    /// The embedding-lookup pipeline for a weight format.
    pub fn embed(&mut self, format: Format) -> &Kernel {
        let (device, module, layout) = (&self.device, &self.embed_module, &self.embed_layout);
        self.embed.entry(format).or_insert_with(|| Kernel {
            pipeline: pipeline(device, "embed", module, layout, &[("FORMAT", format as u32 as f64)]),
            layout: layout.clone(),
        })
    }
}

/// One bind group from buffers in binding order 0, 1, 2, ...
pub fn bind(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> =
        buffers.iter().map(|&(binding, b)| wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() }).collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries })
}
