//! Limits for a template that came with a stranger's file: it is a program the page runs. A
//! render gets a fuel budget (minijinja instructions: loops end), a recursion limit (macros
//! and `loop()` end before the stack does), a cap on each string or list an operator builds
//! (doubling a string ends at the cap, not at the memory's end) and a cap on the output.
//!
//! minijinja runs `+`, `~` and `*` inside its VM and writes literal text without asking
//! anyone, so the compiled template is rewritten before it runs: those operators become calls
//! to guards here, and each literal text becomes a constant emitted through the formatter,
//! which counts every byte written. Filters and Python methods that multiply their input
//! (`replace`, `join`, `indent`, `.center()`...) are checked before they run.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use minijinja::machinery::{CompiledTemplate, Instruction, Instructions, TemplateConfig, WhitespaceConfig};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, State};

/// minijinja instructions per render. Real templates spend a few hundred per message; this
/// leaves room for conversations of thousands of turns and ends a runaway loop within about
/// a tenth of a second natively (a few tenths in wasm).
pub const FUEL: u64 = 1_000_000;
/// Nesting of loops, conditions and calls. minijinja caps it at 500, which overflows a 1 MiB
/// wasm stack first; real templates nest a dozen levels.
pub const RECURSION: usize = 100;
/// The most any string or list built by the template may hold, and the most it may write,
/// on top of what the conversation itself brings (see [`Limits::for_input`]).
pub const VALUE_BYTES: usize = 4 << 20;
pub const OUTPUT_BYTES: usize = 16 << 20;

const ADD: &str = "__amulet_sandbox_add";
const CONCAT: &str = "__amulet_sandbox_concat";
const MUL: &str = "__amulet_sandbox_mul";

/// The caps of one render: the fixed ones above plus a multiple of the input's size, so a long
/// conversation renders as it would without a sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub value_bytes: usize,
    pub output_bytes: usize,
}

impl Limits {
    pub fn for_input(input_bytes: usize) -> Self {
        Limits {
            value_bytes: VALUE_BYTES.saturating_add(input_bytes.saturating_mul(4)),
            output_bytes: OUTPUT_BYTES.saturating_add(input_bytes.saturating_mul(8)),
        }
    }
}

/// The render in progress on this thread (renders are synchronous and never nest).
struct Budget {
    limits: Limits,
    written: usize,
    /// Why the sandbox stopped the render, when it did.
    tripped: Option<String>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Why a render was stopped by a limit (not by the template's own error).
pub enum Outcome {
    Done(String),
    Limit(String),
    Failed(Error),
}

fn trip(reason: String) -> Error {
    BUDGET.with_borrow_mut(|b| {
        if let Some(b) = b {
            b.tripped.get_or_insert(reason.clone());
        }
    });
    Error::new(ErrorKind::InvalidOperation, reason)
}

fn value_cap() -> usize {
    BUDGET.with_borrow(|b| b.as_ref().map_or(VALUE_BYTES, |b| b.limits.value_bytes))
}

/// A cheap upper bound of what a value costs when kept: bytes of a string, 16 per item of a
/// list or map whose length is known.
fn size_of(v: &Value) -> usize {
    match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => v.len().unwrap_or(0).saturating_mul(16),
        _ => 16,
    }
}

fn check_size(what: &str, bytes: usize) -> Result<(), Error> {
    let cap = value_cap();
    if bytes > cap {
        return Err(trip(format!("built a value of {bytes} bytes with {what}, past the sandbox's {cap}")));
    }
    Ok(())
}

/// The operators themselves, from a plain environment: the guards add checks, not semantics.
struct Ops {
    add: Expression<'static, 'static>,
    mul: Expression<'static, 'static>,
    call_filter: Environment<'static>,
}

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| {
        let env: &'static Environment<'static> = Box::leak(Box::new(Environment::new()));
        let expr = |src: &'static str| env.compile_expression(src).expect("a constant expression compiles");
        Ops { add: expr("a + b"), mul: expr("a * b"), call_filter: Environment::new() }
    })
}

fn add(a: Value, b: Value) -> Result<Value, Error> {
    if matches!(a.kind(), ValueKind::String | ValueKind::Seq | ValueKind::Iterable) {
        check_size("`+`", size_of(&a).saturating_add(size_of(&b)))?;
    }
    ops().add.eval(minijinja::context! { a, b })
}

fn concat(a: Value, b: Value) -> Result<Value, Error> {
    let (a, b) = (a.to_string(), b.to_string());
    check_size("`~`", a.len().saturating_add(b.len()))?;
    Ok(Value::from(a + &b))
}

fn mul(a: Value, b: Value) -> Result<Value, Error> {
    let times = |n: &Value| n.as_usize().unwrap_or(0);
    let built = match (a.kind(), b.kind()) {
        (ValueKind::String | ValueKind::Seq | ValueKind::Iterable, _) => size_of(&a).saturating_mul(times(&b)),
        (_, ValueKind::String | ValueKind::Seq | ValueKind::Iterable) => size_of(&b).saturating_mul(times(&a)),
        _ => 0,
    };
    check_size("`*`", built)?;
    ops().mul.eval(minijinja::context! { a, b })
}

/// Counts every byte the template writes (literal text included, see [`rewrite`]).
fn formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> Result<(), Error> {
    let len = match value.as_str() {
        Some(s) => s.len(),
        None => value.to_string().len(),
    };
    let over = BUDGET.with_borrow_mut(|b| {
        let b = b.as_mut()?;
        b.written = b.written.saturating_add(len);
        (b.written > b.limits.output_bytes).then_some(b.limits.output_bytes)
    });
    if let Some(cap) = over {
        return Err(trip(format!("wrote more than the sandbox's {cap} bytes")));
    }
    minijinja::escape_formatter(out, state, value)
}

/// Filters that multiply their input, checked before they run, then run as minijinja would.
fn guarded_filters(env: &mut Environment<'static>) {
    // `[x] * n` is a lazy sequence; `list` would make it real.
    env.add_filter("list", |state: &State, v: Value| {
        check_size("`list`", v.len().unwrap_or(0).saturating_mul(16))?;
        minijinja::filters::list(state, v)
    });
    env.add_filter("replace", |v: Value, from: Value, to: Value, count: Option<Value>| {
        let s = v.to_string();
        let from = from.to_string();
        let hits = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from.as_str()).count() };
        check_size("`replace`", s.len().saturating_add(hits.saturating_mul(to.to_string().len())))?;
        let ctx = minijinja::context! { v => s, from, to, count };
        let expr = if count.is_some() { "v.replace(from, to, count)" } else { "v|replace(from, to)" };
        call(expr, ctx)
    });
    env.add_filter("join", |v: Value, joiner: Option<Value>, kwargs: Kwargs| {
        let j = joiner.as_ref().map_or(0, |j| j.to_string().len());
        let mut total = 0usize;
        if let Ok(items) = v.try_iter() {
            for item in items {
                total = total.saturating_add(item.as_str().map_or(16, str::len)).saturating_add(j);
                check_size("`join`", total)?;
            }
        }
        let attribute: Option<Value> = kwargs.get("attribute")?;
        kwargs.assert_all_used()?;
        call("v|join(j or '', attribute=attribute)", minijinja::context! { v, j => joiner, attribute })
    });
    env.add_filter("indent", |v: Value, width: Option<Value>, first: Option<bool>, blank: Option<bool>| {
        let s = v.to_string();
        let w = width.as_ref().map_or(Ok(4), |w| w.as_str().map(str::len).or(w.as_usize()).ok_or(()));
        let w = w.map_err(|_| Error::new(ErrorKind::InvalidOperation, "indent width must be a number or string"))?;
        check_size("`indent`", s.len().saturating_add((s.matches('\n').count() + 1).saturating_mul(w)))?;
        let ctx =
            minijinja::context! { v => s, width, first => first.unwrap_or(false), blank => blank.unwrap_or(false) };
        call("v|indent(width if width is not none else 4, first, blank)", ctx)
    });
}

fn call(expr: &str, ctx: Value) -> Result<Value, Error> {
    ops().call_filter.compile_expression(expr)?.eval(ctx)
}

/// Python string methods (minijinja-contrib's pycompat) with the ones that multiply their
/// input checked first.
fn methods(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let arg_len = |i: usize| args.get(i).map_or(0, |a| a.as_str().map_or(16, str::len));
        let built = match method {
            "center" | "ljust" | "rjust" | "zfill" => args.first().and_then(Value::as_usize).unwrap_or(0),
            "replace" => {
                let from = args.first().and_then(Value::as_str).unwrap_or("");
                let hits = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from).count() };
                s.len().saturating_add(hits.saturating_mul(arg_len(1)))
            }
            "join" => args.first().and_then(|a| a.len()).unwrap_or(0).saturating_mul(s.len() + 16),
            "expandtabs" => s.len().saturating_mul(args.first().and_then(Value::as_usize).unwrap_or(8)),
            _ => 0,
        };
        check_size(&format!("`.{method}()`"), built)?;
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Installs the limits and guards in an environment.
pub fn install(env: &mut Environment<'static>) {
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env.set_formatter(formatter);
    env.set_unknown_method_callback(methods);
    env.add_function(ADD, add);
    env.add_function(CONCAT, concat);
    env.add_function(MUL, mul);
    guarded_filters(env);
}

/// The whitespace rules of transformers' renderer (see the module above).
pub fn config() -> TemplateConfig {
    TemplateConfig {
        syntax_config: Default::default(),
        ws_config: WhitespaceConfig { keep_trailing_newline: false, lstrip_blocks: true, trim_blocks: true },
        default_auto_escape: Arc::new(|_| AutoEscape::None),
    }
}

/// The template's instructions with `+`, `~`, `*` calling the guards and literal text going
/// through the formatter. Jump targets move with the instructions they point at.
fn rewrite<'s>(src: &Instructions<'s>) -> Instructions<'s> {
    let n = src.len() as u32;
    // Where each old instruction starts in the new sequence (and where the end lands).
    let mut at = Vec::with_capacity(n as usize + 1);
    let mut next = 0u32;
    for i in 0..n {
        at.push(next);
        next += if matches!(src.get(i), Some(Instruction::EmitRaw(_))) { 2 } else { 1 };
    }
    at.push(next);
    let to = |t: u32| at.get(t as usize).copied().unwrap_or(next);
    let mut out = Instructions::new(src.name(), src.source());
    for i in 0..n {
        let Some(instr) = src.get(i) else { continue };
        let mut push = |instr: Instruction<'s>| match src.get_span(i) {
            Some(span) => out.add_with_span(instr, span),
            None => match src.get_line(i) {
                Some(line) => out.add_with_line(instr, line.min(u16::MAX as usize) as u16),
                None => out.add(instr),
            },
        };
        match instr {
            Instruction::EmitRaw(text) => {
                push(Instruction::LoadConst(Value::from_safe_string(text.to_string())));
                push(Instruction::Emit);
            }
            Instruction::Add => _ = push(Instruction::CallFunction(ADD, Some(2))),
            Instruction::StringConcat => _ = push(Instruction::CallFunction(CONCAT, Some(2))),
            Instruction::Mul => _ = push(Instruction::CallFunction(MUL, Some(2))),
            Instruction::Jump(t) => _ = push(Instruction::Jump(to(*t))),
            Instruction::JumpIfFalse(t) => _ = push(Instruction::JumpIfFalse(to(*t))),
            Instruction::JumpIfFalseOrPop(t) => _ = push(Instruction::JumpIfFalseOrPop(to(*t))),
            Instruction::JumpIfTrueOrPop(t) => _ = push(Instruction::JumpIfTrueOrPop(to(*t))),
            Instruction::Iterate(t) => _ = push(Instruction::Iterate(to(*t))),
            Instruction::BuildMacro(name, t, flags) => _ = push(Instruction::BuildMacro(name, to(*t), *flags)),
            other => _ = push(other.clone()),
        }
    }
    out
}

/// Compiles `source` (a syntax error is the error) with the sandbox's rewrite applied.
pub fn compile<'s>(name: &'s str, source: &'s str) -> Result<CompiledTemplate<'s>, Error> {
    let mut t = CompiledTemplate::new(name, source, &config())?;
    t.instructions = rewrite(&t.instructions);
    for block in t.blocks.values_mut() {
        *block = rewrite(block);
    }
    Ok(t)
}

/// Renders a compiled template in `env` (made by [`install`]) within `limits`.
pub fn render(env: &Environment<'static>, t: &CompiledTemplate<'_>, ctx: Value, limits: Limits) -> Outcome {
    BUDGET.with_borrow_mut(|b| *b = Some(Budget { limits, written: 0, tripped: None }));
    let mut text = String::new();
    let result = {
        let mut out = minijinja::machinery::make_string_output(&mut text);
        minijinja::machinery::Vm::new(env).eval(&t.instructions, ctx, &t.blocks, &mut out, AutoEscape::None).map(|_| ())
    };
    let tripped = BUDGET.with_borrow_mut(|b| b.take().and_then(|b| b.tripped));
    match (result, tripped) {
        (Ok(()), _) => Outcome::Done(text),
        (Err(_), Some(reason)) => Outcome::Limit(reason),
        (Err(e), None) if e.kind() == ErrorKind::OutOfFuel => {
            Outcome::Limit(format!("ran out of fuel: more than {FUEL} steps (a loop that does not end?)"))
        }
        (Err(e), None) if e.to_string().contains("recursion limit exceeded") => {
            Outcome::Limit(format!("nested or recursed past the sandbox's depth of {RECURSION}"))
        }
        (Err(e), None) => Outcome::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_moves_jump_targets_with_literal_text() {
        let t = compile("t", "{% for i in range(3) %}a{% if i %}b{% endif %}{% endfor %}c").unwrap();
        let mut env = Environment::new();
        install(&mut env);
        match render(&env, &t, Value::UNDEFINED, Limits::for_input(0)) {
            Outcome::Done(s) => assert_eq!(s, "aabab".to_string() + "c"),
            _ => panic!("the loop did not render"),
        }
    }
}
