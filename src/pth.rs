//! A safe reader for PyTorch `torch.save` files (`.pth`/`.pt`) that never
//! executes anything from them.
//!
//! Since PyTorch 1.6, `torch.save` writes a zip archive holding
//! `<folder>/data.pkl`, a Python pickle of the saved object, and one entry
//! `<folder>/data/<key>` per tensor storage with its raw bytes (plus
//! `byteorder`, `version` and a few bookkeeping entries). Inside the pickle a
//! tensor is a call of `torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, requires_grad, hooks)` whose storage arrives as a "persistent id"
//! tuple `('storage', torch.FloatStorage, key, location, numel)`.
//!
//! This module interprets that pickle as data: the few callables whose meaning
//! is known (tensor and parameter rebuilds, `collections.OrderedDict`,
//! protocol-2 `bytes`) are rebuilt in Rust, every other class or callable
//! becomes an inert [`Value::Object`], and callables that would run code under
//! `torch.load` (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) make
//! the read fail with [`PthError::RefusedCallable`]. Every size read from the
//! file is checked, and everything the reader allocates comes out of a
//! budget of 16 times the file's size plus 256 MiB (see
//! [`PthError::TooLarge`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::ZipArchive;

// ------------------------------------------------------------------ values

/// A Python object from the pickle, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A `dict` or `collections.OrderedDict`, in insertion order. Attributes
    /// set on an `OrderedDict` (such as `nn.Module.state_dict()`'s
    /// `_metadata`) are dropped.
    Dict(Vec<(Value, Value)>),
    Tensor(RawTensor),
    /// A reference to a Python global, such as `torch.float32` or a class;
    /// never resolved.
    Global {
        module: String,
        name: String,
    },
    /// The result of calling a class or function that this reader does not
    /// interpret, such as `torch.device('cpu')` or a pickled dataclass:
    /// `class` is the [`Value::Global`] called, `args` its arguments and
    /// `state` what `BUILD` then set (a dataclass's field dict).
    Object {
        class: Box<Value>,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// The value under the string key `key` of a dict (the last one, as in
    /// Python, should the key repeat), or of an object's state dict, so a
    /// config reads the same whether it was saved as a dict or a dataclass.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(pairs) => pairs.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            Value::Object { state: Some(state), .. } => state.get(key),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The key-value pairs of a dict, in insertion order.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an int as a float (Python configs mix the two freely).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&RawTensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

/// The element types a tensor can have here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    U8,
    I8,
    I16,
    I32,
    I64,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn element_size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

/// PyTorch's name for the dtype: `float32`, `bfloat16`, `int64`, `bool`...
impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
        })
    }
}

/// A tensor's elements, copied out of its storage.
#[derive(Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The elements in contiguous row-major order, little-endian, with the
    /// view's storage offset and strides already applied.
    pub data: Vec<u8>,
    pub requires_grad: bool,
}

/// Shows the layout, not the bytes.
impl fmt::Debug for RawTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("data_len", &self.data.len())
            .field("requires_grad", &self.requires_grad)
            .finish()
    }
}

/// One element, exactly as stored.
#[derive(Clone, Copy)]
enum Scalar {
    Float(f64),
    Int(i64),
}

impl RawTensor {
    /// The number of elements: the product of `shape` (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as `f32`, rounding wider types like torch's `.float()`.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.scalars()
            .map(|s| match s {
                Scalar::Float(x) => x as f32,
                Scalar::Int(i) => i as f32,
            })
            .collect()
    }

    /// The elements as `f64` (exact for every dtype but large `int64`s).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.scalars()
            .map(|s| match s {
                Scalar::Float(x) => x,
                Scalar::Int(i) => i as f64,
            })
            .collect()
    }

    /// The elements as `i64`; floats are truncated toward zero like torch's
    /// `.long()` (saturating, NaN as 0), bools are 0 or 1.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.scalars()
            .map(|s| match s {
                Scalar::Float(x) => x as i64,
                Scalar::Int(i) => i,
            })
            .collect()
    }

    fn scalars(&self) -> impl Iterator<Item = Scalar> + '_ {
        let dtype = self.dtype;
        self.data.chunks_exact(dtype.element_size()).map(move |bytes| decode_scalar(dtype, bytes))
    }
}

fn decode_scalar(dtype: DType, bytes: &[u8]) -> Scalar {
    match dtype {
        DType::F16 => Scalar::Float(f16_to_f32(u16::from_le_bytes(le_array(bytes))).into()),
        DType::BF16 => Scalar::Float(bf16_to_f32(u16::from_le_bytes(le_array(bytes))).into()),
        DType::F32 => Scalar::Float(f32::from_le_bytes(le_array(bytes)).into()),
        DType::F64 => Scalar::Float(f64::from_le_bytes(le_array(bytes))),
        DType::U8 | DType::Bool => Scalar::Int(u8::from_le_bytes(le_array(bytes)).into()),
        DType::I8 => Scalar::Int(i8::from_le_bytes(le_array(bytes)).into()),
        DType::I16 => Scalar::Int(i16::from_le_bytes(le_array(bytes)).into()),
        DType::I32 => Scalar::Int(i32::from_le_bytes(le_array(bytes)).into()),
        DType::I64 => Scalar::Int(i64::from_le_bytes(le_array(bytes))),
    }
}

/// The first `N` bytes of `bytes`, zero-padded should there be fewer.
fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0; N];
    for (slot, byte) in array.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    array
}

/// IEEE 754 half precision: 1 sign, 5 exponent and 10 mantissa bits.
fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: mantissa * 2^-24, exact in f32.
        0 => mantissa as f32 * f32::from_bits(0x3380_0000),
        // Infinity and NaN keep their payload.
        0x1f => f32::from_bits(0x7f80_0000 | (mantissa << 13)),
        // Rebias the exponent from 15 to 127.
        _ => f32::from_bits(((exponent + 112) << 23) | (mantissa << 13)),
    };
    f32::from_bits(sign | magnitude.to_bits())
}

/// bfloat16 is the top half of an f32.
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

// ------------------------------------------------------------------ errors

/// Why a file could not be read. Nothing in the file was executed.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a torch.save zip archive: {reason}")]
    NotArchive { reason: String },
    #[error("cannot read {entry} from the archive: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("the archive's byteorder says {order:?}; only little-endian checkpoints are supported")]
    UnsupportedByteOrder { order: String },
    #[error("truncated pickle: data.pkl ends inside the opcode at offset {offset} or before its STOP")]
    TruncatedPickle { offset: usize },
    #[error("unsupported pickle opcode {opcode:#04x} at offset {offset}")]
    UnsupportedOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at offset {offset}: {reason}")]
    MalformedPickle { offset: usize, reason: String },
    #[error(
        "refusing to load: the pickle calls {module}.{name}, which would run code under torch.load \
         (nothing was executed; only torch tensor rebuilds, collections.OrderedDict and inert \
         objects are understood)"
    )]
    RefusedCallable { module: String, name: String },
    #[error(
        "unsupported tensor storage type {module}.{name} (supported: float16, bfloat16, float32, \
         float64, uint8, int8, int16, int32, int64, bool)"
    )]
    UnsupportedStorage { module: String, name: String },
    #[error("tensor storage {entry} is missing from the archive")]
    MissingStorage { entry: String },
    #[error("tensor storage {entry} holds {actual} bytes but declares {declared}")]
    StorageTooShort { entry: String, declared: usize, actual: u64 },
    #[error(
        "tensor view out of bounds of its storage: its offset, sizes and strides reach past the \
         {numel} elements of {entry}"
    )]
    ViewOutOfBounds { entry: String, numel: usize },
    #[error("the pickle nests values more than {limit} levels deep")]
    TooDeep { limit: usize },
    #[error("the pickle contains a reference cycle (a container inside itself), which has no value tree")]
    Cycle,
    #[error(
        "reading this file would take more than {limit} bytes of memory, the most allowed for a \
         file of its size: it declares more data than it holds or repeats shared data too often"
    )]
    TooLarge { limit: usize },
}

type Result<T> = std::result::Result<T, PthError>;

// ------------------------------------------------------------------ entry points

/// Reads the object that `torch.save` wrote to `path`.
pub fn read_pth(path: &Path) -> Result<Value> {
    let io_error = |source| PthError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    read_archive(BufReader::new(file), len)
}

/// Reads the object from the bytes of a `torch.save` file.
pub fn read_pth_bytes(bytes: &[u8]) -> Result<Value> {
    read_archive(Cursor::new(bytes), bytes.len() as u64)
}

fn read_archive<R: Read + Seek>(reader: R, archive_len: u64) -> Result<Value> {
    let mut budget = Budget::for_archive(archive_len);
    let mut archive = Archive::open(reader)?;
    let pickle = archive.read_pickle(&mut budget)?;
    let (nodes, root) = Machine::new(&pickle, &mut budget).run()?;
    let mut builder = TreeBuilder { on_path: vec![false; nodes.len()], nodes: &nodes, archive, budget };
    builder.build(root, 0)
}

// ------------------------------------------------------------------ budget

/// Bytes per byte of file that a read may allocate, beyond the slack. A
/// tensor checkpoint needs about 2 (its storages, then the tensors); a pickle
/// of many small Python objects needs more, as each is a node and a value.
const BUDGET_PER_FILE_BYTE: usize = 16;
const BUDGET_SLACK: usize = 256 << 20;

/// Caps what one read allocates: the pickle, its nodes, the storages read
/// and the values built, which may exceed the file where tensors are
/// broadcast, shared objects are repeated or the zip compressed the pickle.
/// Linear in the file's size, so a small hostile file cannot make the
/// reader allocate without bound.
struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    fn for_archive(archive_len: u64) -> Self {
        let len = usize::try_from(archive_len).unwrap_or(usize::MAX);
        Budget { limit: len.saturating_mul(BUDGET_PER_FILE_BYTE).saturating_add(BUDGET_SLACK), used: 0 }
    }

    fn remaining(&self) -> usize {
        self.limit - self.used
    }

    fn charge(&mut self, bytes: usize) -> Result<()> {
        if bytes > self.remaining() {
            return Err(PthError::TooLarge { limit: self.limit });
        }
        self.used += bytes;
        Ok(())
    }
}

// ------------------------------------------------------------------ archive

/// The zip archive, its entries' folder, and the storage read last (views
/// of one storage usually come one after another).
struct Archive<R> {
    zip: ZipArchive<R>,
    /// The folder holding `data.pkl`, with its trailing slash.
    prefix: String,
    last_storage: Option<(StorageRef, Vec<u8>)>,
}

impl<R: Read + Seek> Archive<R> {
    fn open(mut reader: R) -> Result<Self> {
        let starts_like_pickle = starts_with_pickle_proto(&mut reader);
        let mut zip = ZipArchive::new(reader).map_err(|error| PthError::NotArchive {
            reason: if starts_like_pickle {
                "it is in the legacy torch.save format (PyTorch < 1.6 or \
                 _use_new_zipfile_serialization=False), which is not supported; \
                 load it in PyTorch and save it again"
                    .to_string()
            } else {
                error.to_string()
            },
        })?;
        let prefix = zip
            .file_names()
            .filter_map(|name| name.strip_suffix("data.pkl"))
            .filter(|folder| folder.ends_with('/') && folder.matches('/').count() == 1)
            .min()
            .ok_or_else(|| PthError::NotArchive { reason: "it has no <folder>/data.pkl entry".to_string() })?
            .to_string();
        check_byte_order(&mut zip, &prefix)?;
        Ok(Archive { zip, prefix, last_storage: None })
    }

    fn read_pickle(&mut self, budget: &mut Budget) -> Result<Vec<u8>> {
        let name = format!("{}data.pkl", self.prefix);
        let bad_entry = |error: io::Error| PthError::BadEntry { entry: name.clone(), reason: error.to_string() };
        let mut entry = self.zip.by_name(&name).map_err(|e| bad_entry(e.into()))?;
        let mut pickle = Vec::new();
        let limit = u64::try_from(budget.remaining()).unwrap_or(u64::MAX);
        (&mut entry).take(limit.saturating_add(1)).read_to_end(&mut pickle).map_err(bad_entry)?;
        budget.charge(pickle.len())?;
        Ok(pickle)
    }

    /// The bytes of `storage`, read whole.
    fn storage(&mut self, storage: &StorageRef, budget: &mut Budget) -> Result<&[u8]> {
        let cached = match self.last_storage.take() {
            Some(cached) if cached.0 == *storage => cached,
            _ => (storage.clone(), self.read_storage(storage, budget)?),
        };
        Ok(&self.last_storage.insert(cached).1)
    }

    fn read_storage(&mut self, storage: &StorageRef, budget: &mut Budget) -> Result<Vec<u8>> {
        let entry_name = storage.entry_name();
        let bad_entry = |error: io::Error| PthError::BadEntry { entry: entry_name.clone(), reason: error.to_string() };
        let mut entry = match self.zip.by_name(&format!("{}{entry_name}", self.prefix)) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Err(PthError::MissingStorage { entry: entry_name }),
            Err(error) => return Err(bad_entry(error.into())),
        };
        let declared = storage.byte_len;
        let too_short = |actual| PthError::StorageTooShort { entry: entry_name.clone(), declared, actual };
        if entry.size() < declared as u64 {
            return Err(too_short(entry.size()));
        }
        budget.charge(declared)?;
        let mut bytes = Vec::with_capacity(declared);
        (&mut entry).take(declared as u64).read_to_end(&mut bytes).map_err(bad_entry)?;
        if bytes.len() < declared {
            return Err(too_short(bytes.len() as u64));
        }
        // Reading on to the entry's end makes the zip reader check its CRC-32.
        entry.read(&mut [0; 1]).map_err(bad_entry)?;
        Ok(bytes)
    }
}

/// Whether the input starts like a bare pickle (the legacy format), leaving
/// the reader at the start either way.
fn starts_with_pickle_proto<R: Read + Seek>(reader: &mut R) -> bool {
    let mut first = [0; 1];
    let read = reader.read(&mut first).unwrap_or(0);
    let rewound = reader.seek(SeekFrom::Start(0)).is_ok();
    rewound && read == 1 && first[0] == op::PROTO
}

fn check_byte_order<R: Read + Seek>(zip: &mut ZipArchive<R>, prefix: &str) -> Result<()> {
    let name = format!("{prefix}byteorder");
    let mut entry = match zip.by_name(&name) {
        Ok(entry) => entry,
        // Files from before the entry existed are little-endian.
        Err(ZipError::FileNotFound) => return Ok(()),
        Err(error) => return Err(PthError::BadEntry { entry: name, reason: error.to_string() }),
    };
    let mut order = Vec::new();
    (&mut entry)
        .take(16)
        .read_to_end(&mut order)
        .map_err(|error| PthError::BadEntry { entry: name, reason: error.to_string() })?;
    let order = String::from_utf8_lossy(&order).trim().to_string();
    if order == "little" {
        Ok(())
    } else {
        Err(PthError::UnsupportedByteOrder { order })
    }
}

// ------------------------------------------------------------------ pickle machine

/// Pickle opcodes (see CPython's `Lib/pickletools.py`), protocols 2 to 5.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BINFLOAT: u8 = b'G';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

/// The newest pickle protocol this reader knows.
const HIGHEST_PROTOCOL: u8 = 5;

/// An index into the machine's node arena.
type NodeId = usize;

/// A Python object while the pickle runs. Containers refer to other nodes by
/// id, so objects shared through the memo stay shared (and may be filled
/// after they are referenced), as in Python.
enum Node {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    Global {
        module: String,
        name: String,
    },
    Object {
        class: NodeId,
        args: Vec<NodeId>,
        state: Option<NodeId>,
    },
    Tensor(Box<TensorView>),
    /// A storage met outside a tensor; it reads as a 1-d tensor.
    Storage(StorageRef),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Global { .. } => "global",
            Node::Object { .. } => "object",
            Node::Tensor(_) => "tensor",
            Node::Storage(_) => "storage",
        }
    }
}

/// A storage entry as its persistent id declares it.
#[derive(Clone, PartialEq)]
struct StorageRef {
    key: String,
    dtype: DType,
    numel: usize,
    byte_len: usize,
}

impl StorageRef {
    /// The entry's name inside the archive's folder.
    fn entry_name(&self) -> String {
        format!("data/{}", self.key)
    }
}

/// A tensor as `_rebuild_tensor_v2` declares it, checked against its
/// storage's declared size.
#[derive(Clone)]
struct TensorView {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
    numel: usize,
    requires_grad: bool,
}

impl TensorView {
    /// A whole storage as a 1-d tensor.
    fn whole(storage: &StorageRef) -> Self {
        TensorView {
            storage: storage.clone(),
            offset: 0,
            shape: vec![storage.numel],
            strides: vec![1],
            numel: storage.numel,
            requires_grad: false,
        }
    }

    /// Whether the elements lie in row-major order from the offset on (the
    /// strides of dimensions of size 1 do not matter).
    fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&size, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected *= size;
        }
        true
    }
}

/// Runs a pickle's opcodes over an arena of nodes. It only builds data:
/// nothing in the pickle is ever called.
struct Machine<'p, 'b> {
    input: &'p [u8],
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    op_offset: usize,
    nodes: Vec<Node>,
    stack: Vec<NodeId>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, NodeId>,
    /// Charged for every node, so a small compressed pickle cannot make a
    /// huge arena.
    budget: &'b mut Budget,
}

impl<'p, 'b> Machine<'p, 'b> {
    fn new(input: &'p [u8], budget: &'b mut Budget) -> Self {
        Machine {
            input,
            pos: 0,
            op_offset: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget,
        }
    }

    /// Runs to STOP, returning the arena and the id of the pickled object.
    fn run(mut self) -> Result<(Vec<Node>, NodeId)> {
        loop {
            self.op_offset = self.pos;
            let [opcode] = self.bytes::<1>()?;
            if opcode == op::STOP {
                let root = self.pop()?;
                return Ok((self.nodes, root));
            }
            if let Some(node) = self.execute(opcode)? {
                self.push(node)?;
            }
        }
    }

    /// Runs one opcode, returning the new object it makes, if any.
    fn execute(&mut self, opcode: u8) -> Result<Option<Node>> {
        let node = match opcode {
            op::NONE => Node::None,
            op::NEWTRUE => Node::Bool(true),
            op::NEWFALSE => Node::Bool(false),
            op::BININT => Node::Int(i32::from_le_bytes(self.bytes()?).into()),
            op::BININT1 => Node::Int(u8::from_le_bytes(self.bytes()?).into()),
            op::BININT2 => Node::Int(u16::from_le_bytes(self.bytes()?).into()),
            op::LONG1 => {
                let len = u8::from_le_bytes(self.bytes()?);
                self.long(len.into())?
            }
            op::LONG4 => {
                let len = self.signed_len("LONG4")?;
                self.long(len)?
            }
            op::BINFLOAT => Node::Float(f64::from_be_bytes(self.bytes()?)),
            // SHORT_BINSTRING and BINSTRING are Python 2 `str`s, which
            // torch.load decodes as UTF-8.
            op::SHORT_BINUNICODE | op::SHORT_BINSTRING => {
                let len = u8::from_le_bytes(self.bytes()?);
                self.text(len.into())?
            }
            op::BINUNICODE => {
                let len = u32::from_le_bytes(self.bytes()?);
                self.text(to_usize(len.into()))?
            }
            op::BINUNICODE8 => {
                let len = u64::from_le_bytes(self.bytes()?);
                self.text(to_usize(len))?
            }
            op::BINSTRING => {
                let len = self.signed_len("BINSTRING")?;
                self.text(len)?
            }
            op::SHORT_BINBYTES => {
                let len = u8::from_le_bytes(self.bytes()?);
                Node::Bytes(self.take(len.into())?.to_vec())
            }
            op::BINBYTES => {
                let len = u32::from_le_bytes(self.bytes()?);
                Node::Bytes(self.take(to_usize(len.into()))?.to_vec())
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let len = u64::from_le_bytes(self.bytes()?);
                Node::Bytes(self.take(to_usize(len))?.to_vec())
            }
            op::EMPTY_LIST => Node::List(Vec::new()),
            op::EMPTY_DICT => Node::Dict(Vec::new()),
            op::EMPTY_TUPLE => Node::Tuple(Vec::new()),
            op::LIST => Node::List(self.pop_mark()?),
            op::TUPLE => Node::Tuple(self.pop_mark()?),
            op::TUPLE1 => Node::Tuple(self.pop_many(1)?),
            op::TUPLE2 => Node::Tuple(self.pop_many(2)?),
            op::TUPLE3 => Node::Tuple(self.pop_many(3)?),
            op::DICT => {
                let items = self.pop_mark()?;
                Node::Dict(self.pairs(items)?)
            }
            op::GLOBAL => {
                let module = self.line()?.to_string();
                let name = self.line()?.to_string();
                Node::Global { module, name }
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let module = self.string(module, "STACK_GLOBAL module")?.to_string();
                let name = self.string(name, "STACK_GLOBAL name")?.to_string();
                Node::Global { module, name }
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.reduce(callable, args)?
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.global_name(class, "NEWOBJ")?;
                let args = self.tuple_items(args, "NEWOBJ arguments")?;
                Node::Object { class, args, state: None }
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                Node::Storage(self.storage(pid)?)
            }
            _ => {
                self.execute_in_place(opcode)?;
                return Ok(None);
            }
        };
        Ok(Some(node))
    }

    /// Runs an opcode that changes the stack, the memo or an existing object.
    fn execute_in_place(&mut self, opcode: u8) -> Result<()> {
        match opcode {
            op::PROTO => {
                let [protocol] = self.bytes::<1>()?;
                if protocol > HIGHEST_PROTOCOL {
                    return Err(self.malformed(format!("unknown pickle protocol {protocol}")));
                }
            }
            // A frame only announces how many bytes follow.
            op::FRAME => {
                self.bytes::<8>()?;
            }
            op::MARK => self.marks.push(self.stack.len()),
            // Like Python, POP with nothing above the last MARK drops the MARK.
            op::POP if self.stack.len() == self.floor() && !self.marks.is_empty() => {
                self.pop_mark()?;
            }
            op::POP => {
                self.pop()?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }
            op::APPEND => {
                let item = self.pop()?;
                let list = self.top()?;
                self.extend_list(list, vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.extend_list(list, items)?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.extend_dict(dict, vec![(key, value)])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let dict = self.top()?;
                self.extend_dict(dict, pairs)?;
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            op::BINPUT => {
                let slot = u8::from_le_bytes(self.bytes()?);
                self.memo_put(slot.into())?;
            }
            op::LONG_BINPUT => {
                let slot = u32::from_le_bytes(self.bytes()?);
                self.memo_put(slot)?;
            }
            op::MEMOIZE => {
                let slot = u32::try_from(self.memo.len()).map_err(|_| self.malformed("the memo is full"))?;
                self.memo_put(slot)?;
            }
            op::BINGET => {
                let slot = u8::from_le_bytes(self.bytes()?);
                self.memo_get(slot.into())?;
            }
            op::LONG_BINGET => {
                let slot = u32::from_le_bytes(self.bytes()?);
                self.memo_get(slot)?;
            }
            _ => return Err(PthError::UnsupportedOpcode { opcode, offset: self.op_offset }),
        }
        Ok(())
    }

    // -------------------------------------------------------- reading input

    fn take(&mut self, len: usize) -> Result<&'p [u8]> {
        let input = self.input;
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| input.get(self.pos..end))
            .ok_or(PthError::TruncatedPickle { offset: self.op_offset })?;
        self.pos += len;
        Ok(bytes)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(le_array(self.take(N)?))
    }

    /// A newline-terminated line, as GLOBAL writes its module and name.
    fn line(&mut self) -> Result<&'p str> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PthError::TruncatedPickle { offset: self.op_offset })?;
        let line = self.take(len + 1)?;
        std::str::from_utf8(&line[..len]).map_err(|_| self.malformed("GLOBAL name is not UTF-8"))
    }

    /// A length written as a signed 32-bit int.
    fn signed_len(&mut self, opcode_name: &str) -> Result<usize> {
        let len = i32::from_le_bytes(self.bytes()?);
        usize::try_from(len).map_err(|_| self.malformed(format!("{opcode_name} has negative length {len}")))
    }

    fn text(&mut self, len: usize) -> Result<Node> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| self.malformed("string is not UTF-8"))?;
        Ok(Node::Str(text.to_string()))
    }

    /// A little-endian two's complement integer of `len` bytes.
    fn long(&mut self, len: usize) -> Result<Node> {
        let bytes = self.take(len)?;
        let value = decode_long(bytes)
            .ok_or_else(|| self.malformed(format!("integer of {len} bytes does not fit in 64 bits")))?;
        Ok(Node::Int(value))
    }

    // -------------------------------------------------------- stack and memo

    fn push(&mut self, node: Node) -> Result<()> {
        self.budget.charge(std::mem::size_of::<Node>())?;
        self.stack.push(self.nodes.len());
        self.nodes.push(node);
        Ok(())
    }

    /// The length below which the stack belongs to an open MARK.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<NodeId> {
        if self.stack.len() > self.floor() {
            if let Some(id) = self.stack.pop() {
                return Ok(id);
            }
        }
        Err(self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<NodeId> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.floor() => Ok(id),
            _ => Err(self.malformed("stack underflow")),
        }
    }

    /// The items pushed since the last MARK, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<NodeId>> {
        let start = self.marks.pop().ok_or_else(|| self.malformed("no MARK to close"))?;
        Ok(self.stack.split_off(start.min(self.stack.len())))
    }

    /// The top `len` items, bottom first.
    fn pop_many(&mut self, len: usize) -> Result<Vec<NodeId>> {
        let mut items = vec![0; len];
        for slot in items.iter_mut().rev() {
            *slot = self.pop()?;
        }
        Ok(items)
    }

    fn memo_put(&mut self, slot: u32) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(slot, top);
        Ok(())
    }

    fn memo_get(&mut self, slot: u32) -> Result<()> {
        let id = *self
            .memo
            .get(&slot)
            .ok_or_else(|| self.malformed(format!("memo slot {slot} is read but was never written")))?;
        self.stack.push(id);
        Ok(())
    }

    // -------------------------------------------------------- containers

    fn pairs(&self, items: Vec<NodeId>) -> Result<Vec<(NodeId, NodeId)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("a dict needs an even number of keys and values"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn extend_list(&mut self, list: NodeId, items: Vec<NodeId>) -> Result<()> {
        if let Node::List(existing) = &mut self.nodes[list] {
            existing.extend(items);
            return Ok(());
        }
        Err(self.malformed(format!("cannot append to a {}", self.nodes[list].kind())))
    }

    fn extend_dict(&mut self, dict: NodeId, pairs: Vec<(NodeId, NodeId)>) -> Result<()> {
        if let Node::Dict(existing) = &mut self.nodes[dict] {
            existing.extend(pairs);
            return Ok(());
        }
        Err(self.malformed(format!("cannot set items of a {}", self.nodes[dict].kind())))
    }

    /// BUILD: sets an object's state. On a dict it is an OrderedDict's
    /// attributes (nn.Module's `_metadata`), which are dropped.
    fn build(&mut self, target: NodeId, state: NodeId) -> Result<()> {
        match &mut self.nodes[target] {
            Node::Object { state: slot, .. } => {
                *slot = Some(state);
                return Ok(());
            }
            Node::Dict(_) => return Ok(()),
            _ => {}
        }
        Err(self.malformed(format!("BUILD cannot set the state of a {}", self.nodes[target].kind())))
    }

    // -------------------------------------------------------- typed access

    fn malformed(&self, reason: impl Into<String>) -> PthError {
        PthError::MalformedPickle { offset: self.op_offset, reason: reason.into() }
    }

    fn wrong_kind(&self, id: NodeId, what: &str, wanted: &str) -> PthError {
        self.malformed(format!("{what} should be a {wanted}, not a {}", self.nodes[id].kind()))
    }

    fn string(&self, id: NodeId, what: &str) -> Result<&str> {
        match &self.nodes[id] {
            Node::Str(s) => Ok(s),
            _ => Err(self.wrong_kind(id, what, "str")),
        }
    }

    fn int(&self, id: NodeId, what: &str) -> Result<i64> {
        match self.nodes[id] {
            Node::Int(i) => Ok(i),
            _ => Err(self.wrong_kind(id, what, "int")),
        }
    }

    fn count(&self, id: NodeId, what: &str) -> Result<usize> {
        let value = self.int(id, what)?;
        usize::try_from(value).map_err(|_| self.malformed(format!("{what} is {value}")))
    }

    fn boolean(&self, id: NodeId, what: &str) -> Result<bool> {
        match self.nodes[id] {
            Node::Bool(b) => Ok(b),
            _ => Err(self.wrong_kind(id, what, "bool")),
        }
    }

    fn tuple_items(&self, id: NodeId, what: &str) -> Result<Vec<NodeId>> {
        match &self.nodes[id] {
            Node::Tuple(items) => Ok(items.clone()),
            _ => Err(self.wrong_kind(id, what, "tuple")),
        }
    }

    /// The counts in a tensor's size or stride tuple.
    fn counts(&self, id: NodeId, what: &str) -> Result<Vec<usize>> {
        match &self.nodes[id] {
            Node::Tuple(items) | Node::List(items) => items.iter().map(|&item| self.count(item, what)).collect(),
            _ => Err(self.wrong_kind(id, what, "tuple")),
        }
    }

    /// The module and name of a global about to be called, refusing those
    /// that would run code.
    fn global_name(&self, id: NodeId, caller: &str) -> Result<(String, String)> {
        match &self.nodes[id] {
            Node::Global { module, name } => {
                refuse_code_running(module, name)?;
                Ok((module.clone(), name.clone()))
            }
            _ => Err(self.wrong_kind(id, &format!("what {caller} calls"), "global")),
        }
    }

    // -------------------------------------------------------- torch

    /// REDUCE: `callable(*args)`, rebuilt in Rust for the callables torch
    /// writes and kept as an inert object otherwise.
    fn reduce(&self, callable: NodeId, args: NodeId) -> Result<Node> {
        let (module, name) = self.global_name(callable, "REDUCE")?;
        let args = self.tuple_items(args, "REDUCE arguments")?;
        if let Some(view) = self.rebuild_tensor_like(&module, &name, &args)? {
            return Ok(Node::Tensor(Box::new(view)));
        }
        let rebuilt = match (module.as_str(), name.as_str()) {
            ("torch._tensor", "_rebuild_from_type_v2") => Some(Node::Tensor(Box::new(self.rebuild_from_type(&args)?))),
            ("collections", "OrderedDict") if args.is_empty() => Some(Node::Dict(Vec::new())),
            // Protocol 2 writes bytes as `_codecs.encode(text, 'latin1')`,
            // and empty bytes as `bytes()`.
            ("_codecs", "encode") => self.latin1(&args).map(Node::Bytes),
            ("__builtin__" | "builtins", "bytes") if args.is_empty() => Some(Node::Bytes(Vec::new())),
            _ => None,
        };
        Ok(rebuilt.unwrap_or(Node::Object { class: callable, args, state: None }))
    }

    /// Calls of torch's tensor and parameter rebuilds; `None` for any other.
    fn rebuild_tensor_like(&self, module: &str, name: &str, args: &[NodeId]) -> Result<Option<TensorView>> {
        Ok(match (module, name) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Some(self.rebuild_tensor(args)?),
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Some(self.rebuild_parameter(args)?)
            }
            _ => None,
        })
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`; the older `_rebuild_tensor` stops at
    /// stride.
    fn rebuild_tensor(&self, args: &[NodeId]) -> Result<TensorView> {
        let [storage, offset, size, stride, rest @ ..] = args else {
            return Err(self.malformed("a tensor rebuild needs storage, offset, size and stride"));
        };
        let storage = match &self.nodes[*storage] {
            Node::Storage(storage) => storage.clone(),
            _ => return Err(self.wrong_kind(*storage, "a tensor's storage", "storage")),
        };
        let offset = self.count(*offset, "tensor storage offset")?;
        let shape = self.counts(*size, "tensor size")?;
        let strides = self.counts(*stride, "tensor stride")?;
        let requires_grad = match rest.first() {
            Some(&flag) => self.boolean(flag, "requires_grad")?,
            None => false,
        };
        if shape.len() != strides.len() {
            return Err(self.malformed(format!("tensor has {} sizes but {} strides", shape.len(), strides.len())));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &size| n.checked_mul(size))
            .filter(|n| n.checked_mul(storage.dtype.element_size()).is_some())
            .ok_or_else(|| self.malformed(format!("tensor size {shape:?} overflows")))?;
        if numel > 0 {
            // The last element the view touches: offset + sum((size-1)*stride).
            let last = shape
                .iter()
                .zip(&strides)
                .try_fold(offset, |at, (&size, &stride)| at.checked_add((size - 1).checked_mul(stride)?));
            if last.is_none_or(|last| last >= storage.numel) {
                return Err(PthError::ViewOutOfBounds { entry: storage.entry_name(), numel: storage.numel });
            }
        }
        Ok(TensorView { storage, offset, shape, strides, numel, requires_grad })
    }

    /// `_rebuild_parameter(data, requires_grad, backward_hooks[, state])`.
    fn rebuild_parameter(&self, args: &[NodeId]) -> Result<TensorView> {
        let [data, requires_grad, ..] = args else {
            return Err(self.malformed("a parameter rebuild needs data and requires_grad"));
        };
        let Node::Tensor(view) = &self.nodes[*data] else {
            return Err(self.wrong_kind(*data, "a parameter's data", "tensor"));
        };
        Ok(TensorView { requires_grad: self.boolean(*requires_grad, "requires_grad")?, ..(**view).clone() })
    }

    /// `_rebuild_from_type_v2(func, type, args, state)`, written for tensors
    /// that carry Python attributes: `func(*args)`, attributes dropped.
    fn rebuild_from_type(&self, args: &[NodeId]) -> Result<TensorView> {
        let [func, _, func_args, ..] = args else {
            return Err(self.malformed("_rebuild_from_type_v2 needs func, type and args"));
        };
        let (module, name) = self.global_name(*func, "_rebuild_from_type_v2")?;
        let func_args = self.tuple_items(*func_args, "_rebuild_from_type_v2 args")?;
        self.rebuild_tensor_like(&module, &name, &func_args)?
            .ok_or_else(|| self.malformed(format!("_rebuild_from_type_v2 of {module}.{name} is not understood")))
    }

    /// The bytes of `_codecs.encode(text, 'latin1')`.
    fn latin1(&self, args: &[NodeId]) -> Option<Vec<u8>> {
        let [text, encoding] = args else { return None };
        let (Node::Str(text), Node::Str(encoding)) = (&self.nodes[*text], &self.nodes[*encoding]) else {
            return None;
        };
        if encoding != "latin1" && encoding != "latin-1" {
            return None;
        }
        text.chars().map(|c| u8::try_from(c).ok()).collect()
    }

    /// BINPERSID: `('storage', storage_type, key, location, numel)`.
    fn storage(&self, pid: NodeId) -> Result<StorageRef> {
        let items = self.tuple_items(pid, "a persistent id")?;
        let [tag, storage_type, key, location, numel] = items[..] else {
            return Err(self.malformed("persistent id is not ('storage', type, key, location, numel)"));
        };
        if self.string(tag, "persistent id tag")? != "storage" {
            return Err(self.malformed("persistent id is not a storage"));
        }
        let dtype = match &self.nodes[storage_type] {
            Node::Global { module, name } => storage_dtype(module, name)
                .ok_or_else(|| PthError::UnsupportedStorage { module: module.clone(), name: name.clone() })?,
            _ => return Err(self.wrong_kind(storage_type, "storage type", "global")),
        };
        let key = self.string(key, "storage key")?.to_string();
        self.string(location, "storage location")?;
        let numel = self.count(numel, "storage numel")?;
        let byte_len = numel
            .checked_mul(dtype.element_size())
            .ok_or_else(|| self.malformed(format!("storage of {numel} elements overflows")))?;
        Ok(StorageRef { key, dtype, numel, byte_len })
    }
}

/// `usize` from a length read from the file; one too long for memory reads
/// as truncated, as it cannot be in the input.
fn to_usize(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// A little-endian two's complement integer, if it fits in an `i64`.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if bytes.iter().skip(8).any(|&b| b != fill) {
        return None;
    }
    let mut array = [fill; 8];
    for (slot, byte) in array.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    let value = i64::from_le_bytes(array);
    ((value < 0) == negative).then_some(value)
}

/// The dtype of a storage type as torch pickles it.
fn storage_dtype(module: &str, name: &str) -> Option<DType> {
    Some(match (module, name) {
        ("torch", "HalfStorage") => DType::F16,
        ("torch", "BFloat16Storage") => DType::BF16,
        ("torch", "FloatStorage") => DType::F32,
        ("torch", "DoubleStorage") => DType::F64,
        ("torch", "ByteStorage") => DType::U8,
        ("torch", "CharStorage") => DType::I8,
        ("torch", "ShortStorage") => DType::I16,
        ("torch", "IntStorage") => DType::I32,
        ("torch", "LongStorage") => DType::I64,
        ("torch", "BoolStorage") => DType::Bool,
        // A storage saved on its own, without a tensor: bytes.
        ("torch.storage", "UntypedStorage") => DType::U8,
        _ => return None,
    })
}

/// Modules whose callables run code, processes or imports (Python 2 names
/// too: protocol 2 writes `subprocess.Popen` as `commands.Popen`).
#[rustfmt::skip]
const CODE_RUNNING_MODULES: &[&str] = &[
    "os", "posix", "nt", "subprocess", "commands", "popen2", "pty", "sys", "shutil", "socket",
    "importlib", "imp", "runpy", "ctypes", "pickle", "_pickle", "cPickle", "marshal", "code",
    "codeop", "pdb", "timeit", "webbrowser", "multiprocessing", "asyncio", "signal",
    "_posixsubprocess", "pip",
];

/// Builtins that evaluate code or reach arbitrary attributes.
#[rustfmt::skip]
const CODE_RUNNING_BUILTINS: &[&str] = &[
    "eval", "exec", "execfile", "compile", "open", "file", "__import__", "getattr", "setattr",
    "delattr", "globals", "locals", "vars", "input", "raw_input", "breakpoint", "apply", "reload",
];

/// Refuses callables that make `torch.load(weights_only=False)` run code.
/// This reader never calls anything anyway; refusing tells the user that the
/// file is hostile instead of handing back an object that looks harmless.
fn refuse_code_running(module: &str, name: &str) -> Result<()> {
    let root = module.split('.').next().unwrap_or(module);
    let runs_code = CODE_RUNNING_MODULES.contains(&root)
        || (matches!(module, "builtins" | "__builtin__") && CODE_RUNNING_BUILTINS.contains(&name))
        || (module == "operator" && matches!(name, "attrgetter" | "methodcaller"));
    if runs_code {
        return Err(PthError::RefusedCallable { module: module.to_string(), name: name.to_string() });
    }
    Ok(())
}

// ------------------------------------------------------------------ value tree

/// Values nested deeper than this are refused; torch checkpoints nest a
/// handful of levels.
const MAX_DEPTH: usize = 128;

/// Turns the machine's node graph into a [`Value`] tree, reading tensor data
/// from the archive. A node reached twice is copied twice (each copy
/// charged to the budget); a node reached from itself is a cycle.
struct TreeBuilder<'n, R> {
    nodes: &'n [Node],
    archive: Archive<R>,
    budget: Budget,
    /// Nodes between the root and the one being built.
    on_path: Vec<bool>,
}

impl<R: Read + Seek> TreeBuilder<'_, R> {
    fn build(&mut self, id: NodeId, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(PthError::TooDeep { limit: MAX_DEPTH });
        }
        if self.on_path[id] {
            return Err(PthError::Cycle);
        }
        self.budget.charge(std::mem::size_of::<Value>())?;
        self.on_path[id] = true;
        let value = self.build_node(id, depth);
        self.on_path[id] = false;
        value
    }

    fn build_node(&mut self, id: NodeId, depth: usize) -> Result<Value> {
        let nodes = self.nodes;
        Ok(match &nodes[id] {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::Float(x) => Value::Float(*x),
            Node::Str(s) => {
                self.budget.charge(s.len())?;
                Value::Str(s.clone())
            }
            Node::Bytes(b) => {
                self.budget.charge(b.len())?;
                Value::Bytes(b.clone())
            }
            Node::List(items) => Value::List(self.build_all(items, depth)?),
            Node::Tuple(items) => Value::Tuple(self.build_all(items, depth)?),
            Node::Dict(pairs) => Value::Dict(
                pairs
                    .iter()
                    .map(|&(key, value)| Ok((self.build(key, depth + 1)?, self.build(value, depth + 1)?)))
                    .collect::<Result<_>>()?,
            ),
            Node::Global { module, name } => {
                self.budget.charge(module.len() + name.len())?;
                Value::Global { module: module.clone(), name: name.clone() }
            }
            Node::Object { class, args, state } => Value::Object {
                class: Box::new(self.build(*class, depth + 1)?),
                args: self.build_all(args, depth)?,
                state: match state {
                    Some(state) => Some(Box::new(self.build(*state, depth + 1)?)),
                    None => None,
                },
            },
            Node::Tensor(view) => Value::Tensor(self.materialize(view)?),
            Node::Storage(storage) => Value::Tensor(self.materialize(&TensorView::whole(storage))?),
        })
    }

    fn build_all(&mut self, items: &[NodeId], depth: usize) -> Result<Vec<Value>> {
        items.iter().map(|&item| self.build(item, depth + 1)).collect()
    }

    /// Copies a view's elements out of its storage into row-major order.
    fn materialize(&mut self, view: &TensorView) -> Result<RawTensor> {
        let dtype = view.storage.dtype;
        let element_size = dtype.element_size();
        let data = if view.numel == 0 {
            Vec::new()
        } else {
            // Reading the storage first reports a storage shorter than it
            // claims before any budget is spent on the view.
            let storage = self.archive.storage(&view.storage, &mut self.budget)?;
            // The product was checked when the view was rebuilt.
            self.budget.charge(view.numel * element_size)?;
            gather(storage, view, element_size).ok_or_else(|| PthError::ViewOutOfBounds {
                entry: view.storage.entry_name(),
                numel: view.storage.numel,
            })?
        };
        Ok(RawTensor { dtype, shape: view.shape.clone(), data, requires_grad: view.requires_grad })
    }
}

/// The elements of a non-empty `view` in row-major order, copying runs of
/// contiguous elements at once; `None` if the view leaves `storage`.
fn gather(storage: &[u8], view: &TensorView, element_size: usize) -> Option<Vec<u8>> {
    let element_range = |start: usize, count: usize| {
        let begin = start.checked_mul(element_size)?;
        let end = start.checked_add(count)?.checked_mul(element_size)?;
        storage.get(begin..end)
    };
    if view.is_contiguous() {
        return element_range(view.offset, view.numel).map(<[u8]>::to_vec);
    }
    let mut data = Vec::with_capacity(view.numel * element_size);
    // A non-contiguous view has at least one dimension.
    let (&inner_size, outer_shape) = view.shape.split_last()?;
    let (&inner_stride, outer_strides) = view.strides.split_last()?;
    let mut index = vec![0; outer_shape.len()];
    loop {
        let row_start = index
            .iter()
            .zip(outer_strides)
            .try_fold(view.offset, |at, (&i, &stride): (&usize, &usize)| at.checked_add(i.checked_mul(stride)?))?;
        if inner_stride == 1 {
            data.extend_from_slice(element_range(row_start, inner_size)?);
        } else {
            for i in 0..inner_size {
                let at = i.checked_mul(inner_stride)?.checked_add(row_start)?;
                data.extend_from_slice(element_range(at, 1)?);
            }
        }
        // Advance the outer index like an odometer, last dimension fastest.
        let mut dim = outer_shape.len();
        loop {
            if dim == 0 {
                return Some(data);
            }
            dim -= 1;
            index[dim] += 1;
            if index[dim] < outer_shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
}
