//! What one instance of a component takes from the instance pool, read from
//! the component's bytes before any engine exists: the pool's limits are
//! fixed when the engine is built, before the first component is compiled.
//!
//! A Rust `wasm32-wasip2` plugin instantiates 3 core modules (the program
//! and two shims); a componentize-py plugin instantiates 14 (CPython, libc
//! and the other libraries it links dynamically, the WASI adapter, shims),
//! so a pool sized for Rust plugins holds far fewer Python instances than
//! it was meant to.

use std::fmt;
use std::path::Path;

use wasmparser::{Encoding, Instance, Parser, Payload};

/// The pool resources one instance of a component holds while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceNeeds {
    /// Core module instances it creates (each holds a `VMContext`).
    pub core_instances: u32,
    /// Linear memories those instances define (imported ones are shared).
    pub memories: u32,
    /// Tables those instances define.
    pub tables: u32,
}

impl Default for InstanceNeeds {
    /// Room for a Rust `wasm32-wasip2` plugin, with margin: the bundled
    /// plugins need 3 core instances, 1 memory and 2 tables.
    fn default() -> Self {
        InstanceNeeds {
            core_instances: 8,
            memories: 2,
            tables: 8,
        }
    }
}

impl fmt::Display for InstanceNeeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} core instances, {} memories, {} tables",
            self.core_instances, self.memories, self.tables
        )
    }
}

impl InstanceNeeds {
    /// Reads a component file; see [`InstanceNeeds::of_component`].
    pub fn of_file(path: &Path) -> Result<InstanceNeeds, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        InstanceNeeds::of_component(&bytes)
    }

    /// Counts what instantiating `bytes` creates: each core instance
    /// instantiated from a module, with the memories and tables the module
    /// defines, nested components counted once per instantiation. Core
    /// modules whose definition is not in the file (imported or aliased from
    /// an outer component) are counted as the largest module that is.
    pub fn of_component(bytes: &[u8]) -> Result<InstanceNeeds, String> {
        let mut stack: Vec<Frame> = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| format!("not a WebAssembly component: {e}"))?;
            match payload {
                Payload::Version { encoding, .. } => stack.push(match encoding {
                    Encoding::Module => Frame::Module(InstanceNeeds::zero()),
                    Encoding::Component => Frame::Component(Scope::default()),
                }),
                Payload::MemorySection(section) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        module.memories += section.count();
                    }
                }
                Payload::TableSection(section) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        module.tables += section.count();
                    }
                }
                Payload::InstanceSection(section) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else {
                        continue;
                    };
                    for instance in section {
                        let instance = instance.map_err(|e| e.to_string())?;
                        if let Instance::Instantiate { module_index, .. } = instance {
                            let module = scope.module(module_index);
                            scope.needs.add(InstanceNeeds {
                                core_instances: 1,
                                ..module
                            });
                        }
                    }
                }
                Payload::ComponentInstanceSection(section) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else {
                        continue;
                    };
                    for instance in section {
                        let instance = instance.map_err(|e| e.to_string())?;
                        if let wasmparser::ComponentInstance::Instantiate {
                            component_index, ..
                        } = instance
                        {
                            let component = scope.component(component_index);
                            scope.needs.add(component);
                        }
                    }
                }
                Payload::ComponentAliasSection(section) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else {
                        continue;
                    };
                    for alias in section {
                        match alias.map_err(|e| e.to_string())? {
                            wasmparser::ComponentAlias::Outer {
                                kind: wasmparser::ComponentOuterAliasKind::CoreModule,
                                ..
                            } => scope.modules.push(None),
                            wasmparser::ComponentAlias::Outer {
                                kind: wasmparser::ComponentOuterAliasKind::Component,
                                ..
                            } => scope.components.push(None),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentImportSection(section) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else {
                        continue;
                    };
                    for import in section {
                        match import.map_err(|e| e.to_string())?.ty {
                            wasmparser::ComponentTypeRef::Module(_) => scope.modules.push(None),
                            wasmparser::ComponentTypeRef::Component(_) => {
                                scope.components.push(None)
                            }
                            _ => {}
                        }
                    }
                }
                Payload::End(_) => match (stack.pop(), stack.last_mut()) {
                    (Some(Frame::Module(module)), Some(Frame::Component(parent))) => {
                        parent.modules.push(Some(module));
                    }
                    (Some(Frame::Component(scope)), Some(Frame::Component(parent))) => {
                        parent.components.push(Some(scope.needs));
                    }
                    (Some(Frame::Component(scope)), None) => return Ok(scope.needs),
                    (Some(Frame::Module(_)), None) => {
                        return Err("a core module, not a component".into());
                    }
                    _ => return Err("malformed nesting of modules and components".into()),
                },
                _ => {}
            }
        }
        Err("the component ends early".into())
    }

    fn zero() -> InstanceNeeds {
        InstanceNeeds {
            core_instances: 0,
            memories: 0,
            tables: 0,
        }
    }

    fn add(&mut self, other: InstanceNeeds) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }

    /// The larger of each count: a slot that holds either.
    pub fn max(self, other: InstanceNeeds) -> InstanceNeeds {
        InstanceNeeds {
            core_instances: self.core_instances.max(other.core_instances),
            memories: self.memories.max(other.memories),
            tables: self.tables.max(other.tables),
        }
    }

    /// Whether an instance needing `self` fits in a slot of `slot`.
    pub fn fits_in(&self, slot: &InstanceNeeds) -> bool {
        self.core_instances <= slot.core_instances
            && self.memories <= slot.memories
            && self.tables <= slot.tables
    }
}

enum Frame {
    Module(InstanceNeeds),
    Component(Scope),
}

/// One component's index spaces of core modules and components (`None` for
/// those whose definition is elsewhere), and what its instantiations add up to.
struct Scope {
    modules: Vec<Option<InstanceNeeds>>,
    components: Vec<Option<InstanceNeeds>>,
    needs: InstanceNeeds,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            modules: Vec::new(),
            components: Vec::new(),
            needs: InstanceNeeds::zero(),
        }
    }
}

impl Scope {
    fn module(&self, index: u32) -> InstanceNeeds {
        known_or_largest(&self.modules, index)
    }

    fn component(&self, index: u32) -> InstanceNeeds {
        known_or_largest(&self.components, index)
    }
}

fn known_or_largest(space: &[Option<InstanceNeeds>], index: u32) -> InstanceNeeds {
    let largest = || {
        space
            .iter()
            .flatten()
            .fold(InstanceNeeds::zero(), |a, b| a.max(*b))
    };
    match space.get(index as usize) {
        Some(Some(needs)) => *needs,
        _ => largest(),
    }
}
