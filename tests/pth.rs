//! Tests of the torch.save reader against files written by real PyTorch
//! (tests/data/pth, made by make_pth_fixtures.py, which also wrote
//! expected.json) and against hostile or broken files built here.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use groklens::pth::{read_pth, read_pth_bytes, DType, PthError, RawTensor, Value};
use serde_json::Value as Json;
use zip::write::FileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pth/");

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture exists; run make_pth_fixtures.py")
}

/// PyTorch's description of a fixture, from expected.json.
fn expected(name: &str) -> Json {
    let text = std::fs::read_to_string(fixture_path("expected.json")).expect("expected.json exists");
    let all: Json = serde_json::from_str(&text).expect("expected.json is JSON");
    all[name].clone()
}

fn read_fixture(name: &str) -> Value {
    read_pth(&fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ------------------------------------------------------------ comparing with PyTorch

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal bit for bit, or both NaN (so -0.0 differs from 0.0).
fn assert_same_float(got: f64, want: f64, path: &str) {
    assert!(
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
        "{path}: got {got:?}, PyTorch has {want:?}"
    );
}

fn parse_float(repr: &Json) -> f64 {
    repr.as_str().expect("float repr").parse().expect("float repr parses")
}

/// Asserts that `value` is what PyTorch described (see `describe` in
/// make_pth_fixtures.py), recursively.
fn assert_matches(value: &Value, expected: &Json, path: &str) {
    let kind = expected["kind"].as_str().expect("description has a kind");
    match (kind, value) {
        ("none", Value::None) => {}
        ("bool", Value::Bool(b)) => assert_eq!(Some(*b), expected["value"].as_bool(), "{path}"),
        ("int", Value::Int(i)) => assert_eq!(Some(*i), expected["value"].as_i64(), "{path}"),
        ("float", Value::Float(x)) => assert_same_float(*x, parse_float(&expected["repr"]), path),
        ("str", Value::Str(s)) => {
            assert_eq!(Some(s.as_str()), expected["value"].as_str(), "{path}")
        }
        ("bytes", Value::Bytes(b)) => {
            assert_eq!(Some(hex(b).as_str()), expected["hex"].as_str(), "{path}")
        }
        ("list", Value::List(items)) | ("tuple", Value::Tuple(items)) => {
            let want = expected["items"].as_array().expect("items");
            assert_eq!(items.len(), want.len(), "{path}: length");
            for (i, (item, want)) in items.iter().zip(want).enumerate() {
                assert_matches(item, want, &format!("{path}[{i}]"));
            }
        }
        ("dict", Value::Dict(pairs)) => {
            let want = expected["items"].as_array().expect("items");
            assert_eq!(pairs.len(), want.len(), "{path}: length");
            for ((key, value), want) in pairs.iter().zip(want) {
                let key_path = format!("{path}/{}", key.as_str().unwrap_or("<key>"));
                assert_matches(key, &want[0], &key_path);
                assert_matches(value, &want[1], &key_path);
            }
        }
        ("tensor", Value::Tensor(tensor)) => assert_tensor_matches(tensor, expected, path),
        ("global", Value::Global { module, name }) => {
            assert_eq!(Some(module.as_str()), expected["module"].as_str(), "{path}");
            assert_eq!(Some(name.as_str()), expected["name"].as_str(), "{path}");
        }
        ("object", Value::Object { class, args, state }) => {
            let Value::Global { module, name } = class.as_ref() else {
                panic!("{path}: class {class:?} is not a global");
            };
            assert_eq!(Some(module.as_str()), expected["module"].as_str(), "{path}");
            assert_eq!(Some(name.as_str()), expected["name"].as_str(), "{path}");
            let want_args = expected["args"].as_array().expect("args");
            assert_eq!(args.len(), want_args.len(), "{path}: args");
            for (i, (arg, want)) in args.iter().zip(want_args).enumerate() {
                assert_matches(arg, want, &format!("{path}.args[{i}]"));
            }
            match (state, &expected["state"]) {
                (None, Json::Null) => {}
                (Some(state), want) if !want.is_null() => assert_matches(state, want, &format!("{path}.state")),
                (state, want) => panic!("{path}: state {state:?}, PyTorch has {want}"),
            }
        }
        _ => panic!("{path}: PyTorch has a {kind}, got {value:?}"),
    }
}

fn assert_tensor_matches(tensor: &RawTensor, expected: &Json, path: &str) {
    assert_eq!(Some(tensor.dtype.to_string().as_str()), expected["dtype"].as_str(), "{path}: dtype");
    let shape: Vec<usize> =
        expected["shape"].as_array().expect("shape").iter().map(|n| n.as_u64().expect("size") as usize).collect();
    assert_eq!(tensor.shape, shape, "{path}: shape");
    assert_eq!(tensor.numel(), shape.iter().product::<usize>(), "{path}: numel");
    assert_eq!(Some(tensor.requires_grad), expected["requires_grad"].as_bool(), "{path}: requires_grad");
    assert_eq!(Some(hex(&tensor.data).as_str()), expected["hex"].as_str(), "{path}: bytes");
    let Some(values) = expected["values"].as_array() else {
        return;
    };
    let (as_f64, as_f32, as_i64) = (tensor.to_f64_vec(), tensor.to_f32_vec(), tensor.to_i64_vec());
    assert_eq!(as_f64.len(), values.len(), "{path}: element count");
    assert_eq!(as_f32.len(), values.len(), "{path}: element count");
    assert_eq!(as_i64.len(), values.len(), "{path}: element count");
    let is_float = matches!(tensor.dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64);
    for (i, want) in values.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if is_float {
            let want = parse_float(want);
            assert_same_float(as_f64[i], want, &at);
            assert_same_float(as_f32[i].into(), f64::from(want as f32), &at);
            assert_eq!(as_i64[i], want as i64, "{at}");
        } else {
            let want = want.as_i64().expect("integer element");
            assert_eq!(as_i64[i], want, "{at}");
            assert_same_float(as_f64[i], want as f64, &at);
            assert_same_float(as_f32[i].into(), f64::from(want as f32), &at);
        }
    }
}

#[test]
fn demo_small_matches_pytorch() {
    assert_matches(&read_fixture("demo_small.pth"), &expected("demo_small.pth"), "demo_small");
}

#[test]
fn demo_with_dataclass_config_matches_pytorch() {
    let name = "demo_dataclass_config.pth";
    assert_matches(&read_fixture(name), &expected(name), "demo_dataclass_config");
}

#[test]
fn views_shared_storages_and_dtypes_match_pytorch() {
    assert_matches(&read_fixture("views.pth"), &expected("views.pth"), "views");
}

#[test]
fn protocol_4_pickle_matches_pytorch() {
    assert_matches(&read_fixture("protocol4.pth"), &expected("protocol4.pth"), "protocol4");
}

#[test]
fn reading_bytes_equals_reading_the_file() {
    let from_bytes = read_pth_bytes(&fixture_bytes("views.pth")).expect("views.pth reads");
    assert_eq!(from_bytes, read_fixture("views.pth"));
}

// ------------------------------------------------------------ the consumer's view

#[test]
fn demo_small_reads_the_way_groklens_uses_it() {
    let demo = read_fixture("demo_small.pth");
    let model = demo.get("model").expect("model");
    let keys: Vec<&str> = model.as_dict().expect("state dict").iter().filter_map(|(key, _)| key.as_str()).collect();
    let attn = |name: &str| format!("blocks.0.attn.{name}");
    let mut want = vec!["embed.W_E".to_string(), "pos_embed.W_pos".to_string()];
    want.extend(["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "mask", "IGNORE"].map(attn));
    want.extend(["W_in", "b_in", "W_out", "b_out"].map(|name| format!("blocks.0.mlp.{name}")));
    want.extend(["unembed.W_U", "unembed.b_U"].map(String::from));
    assert_eq!(keys, want);

    let tensor = |name: &str| model.get(name).and_then(Value::as_tensor).expect(name);
    let w_q = tensor("blocks.0.attn.W_Q");
    assert_eq!((w_q.dtype, w_q.shape.as_slice()), (DType::F32, &[2, 8, 4][..]));
    assert_eq!(w_q.to_f32_vec().len(), 64);
    let mask = tensor("blocks.0.attn.mask");
    assert_eq!(mask.dtype, DType::Bool);
    assert_eq!(mask.to_i64_vec(), [1, 0, 0, 1, 1, 0, 1, 1, 1]);
    let ignore = tensor("blocks.0.attn.IGNORE");
    assert!(ignore.shape.is_empty());
    assert_eq!(ignore.to_f32_vec(), [-1e5]);

    let config = demo.get("config").expect("config");
    assert_eq!(config.get("d_model").and_then(Value::as_i64), Some(8));
    assert_eq!(config.get("lr").and_then(Value::as_f64), Some(1e-3));
    assert_eq!(config.get("weight_decay").and_then(Value::as_f64), Some(1.0));
    assert_eq!(config.get("act_fn").and_then(Value::as_str), Some("relu"));
    assert_eq!(config.get("init_weights").and_then(Value::as_bool), Some(true));
    assert_eq!(config.get("normalization_type"), Some(&Value::None));
    let betas: Vec<f64> =
        config.get("betas").and_then(Value::as_list).expect("betas").iter().filter_map(Value::as_f64).collect();
    assert_eq!(betas, [0.9, 0.98]);
    assert_eq!(config.get("dtype"), Some(&Value::Global { module: "torch".into(), name: "float32".into() }));
    assert_eq!(
        config.get("device"),
        Some(&Value::Object {
            class: Box::new(Value::Global { module: "torch".into(), name: "device".into() }),
            args: vec![Value::Str("cpu".into())],
            state: None,
        })
    );

    let checkpoints = demo.get("checkpoints").and_then(Value::as_list).expect("checkpoints");
    assert_eq!(checkpoints.len(), 3);
    for checkpoint in checkpoints {
        let b_u = checkpoint.get("unembed.b_U").and_then(Value::as_tensor).expect("b_U");
        assert_eq!(b_u.shape, [7]);
    }
    let epochs: Vec<i64> = demo
        .get("checkpoint_epochs")
        .and_then(Value::as_list)
        .expect("epochs")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(epochs, [99, 199, 299]);
    let losses = demo.get("train_losses").and_then(Value::as_list).expect("losses");
    assert_eq!(losses.iter().filter_map(Value::as_f64).count(), 100);
    let train = demo.get("train_indices").and_then(Value::as_tensor).expect("train_indices");
    let test = demo.get("test_indices").and_then(Value::as_tensor).expect("test_indices");
    assert_eq!(train.dtype, DType::I64);
    let mut all: Vec<i64> = train.to_i64_vec().into_iter().chain(test.to_i64_vec()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..49).collect::<Vec<i64>>(), "a permutation of the 7*7 pairs");
}

#[test]
fn dataclass_config_is_an_inert_object_read_like_a_dict() {
    let demo = read_fixture("demo_dataclass_config.pth");
    let config = demo.get("config").expect("config");
    let Value::Object { class, args, .. } = config else {
        panic!("config is {config:?}");
    };
    assert_eq!(
        **class,
        Value::Global {
            module: "transformer_lens.HookedTransformerConfig".into(),
            name: "HookedTransformerConfig".into(),
        }
    );
    assert!(args.is_empty());
    assert_eq!(config.get("d_model").and_then(Value::as_i64), Some(8));
    assert_eq!(config.get("d_mlp").and_then(Value::as_i64), Some(16));
    assert_eq!(config.get("normalization_type"), Some(&Value::None));
    let fn_name = config.get("extra").and_then(|extra| extra.get("fn_name"));
    assert_eq!(fn_name.and_then(Value::as_str), Some("add"));
    assert_eq!(config.get("no_such_field"), None);
}

#[test]
fn value_helpers_answer_none_for_other_kinds() {
    let list = Value::List(vec![Value::Int(1)]);
    assert_eq!(list.get("x"), None);
    assert_eq!(list.as_dict(), None);
    assert_eq!(Value::Tuple(vec![Value::Int(2)]).as_list(), Some(&[Value::Int(2)][..]));
    assert_eq!(Value::Int(3).as_f64(), Some(3.0));
    assert_eq!(Value::Float(3.0).as_i64(), None);
    assert_eq!(Value::Str("x".into()).as_tensor(), None);
    assert_eq!(Value::None.as_str(), None);
    assert_eq!(Value::Int(1).as_bool(), None);
    let object_without_state = Value::Object {
        class: Box::new(Value::Global { module: "m".into(), name: "C".into() }),
        args: vec![],
        state: None,
    };
    assert_eq!(object_without_state.get("x"), None);
}

// ------------------------------------------------------------ building files by hand

/// Zips `entries` (name, bytes) the way torch.save lays them out.
fn zip_entries(entries: &[(String, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = FileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), options).expect("start entry");
        writer.write_all(bytes).expect("write entry");
    }
    writer.finish().expect("finish zip").into_inner()
}

/// The entries of a zip archive, in order.
fn unzip_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).expect("fixture is a zip");
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).expect("entry");
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry reads");
            (entry.name().to_string(), data)
        })
        .collect()
}

/// A fixture re-zipped after `edit` changed its entries.
fn edited_fixture(name: &str, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut entries = unzip_entries(&fixture_bytes(name));
    edit(&mut entries);
    zip_entries(&entries, CompressionMethod::Stored)
}

/// An archive holding `pickle` as data.pkl and `storages` as data/<key>.
fn archive(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut entries =
        vec![("archive/data.pkl".to_string(), pickle.to_vec()), ("archive/byteorder".to_string(), b"little".to_vec())];
    for (key, bytes) in storages {
        entries.push((format!("archive/data/{key}"), bytes.to_vec()));
    }
    zip_entries(&entries, CompressionMethod::Stored)
}

fn read_pickle(pickle: &[u8]) -> Result<Value, PthError> {
    read_pth_bytes(&archive(pickle, &[]))
}

/// Writes pickle opcodes by name.
struct Pickle(Vec<u8>);

impl Pickle {
    /// PROTO 2.
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }

    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// LONG1 with 8 bytes, so any i64 fits.
    fn int(self, value: i64) -> Self {
        self.op(&[0x8a, 8]).op(&value.to_le_bytes())
    }

    /// BINUNICODE.
    fn str(self, text: &str) -> Self {
        let len = u32::try_from(text.len()).expect("short text").to_le_bytes();
        self.op(b"X").op(&len).op(text.as_bytes())
    }

    /// GLOBAL.
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    /// MARK, the ints, TUPLE.
    fn ints(self, values: &[i64]) -> Self {
        values.iter().fold(self.op(b"("), |p, &v| p.int(v)).op(b"t")
    }

    /// BINPERSID of storage "0" of `storage_type`.
    fn storage(self, storage_type: &str, numel: i64) -> Self {
        self.op(b"(").str("storage").global("torch", storage_type).str("0").str("cpu").int(numel).op(b"tQ")
    }

    /// STOP.
    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// `_rebuild_tensor_v2(storage "0", offset, size, stride, False, ...)`.
fn tensor_pickle(storage_numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    Pickle::new()
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"(")
        .storage("FloatStorage", storage_numel)
        .int(offset)
        .ints(size)
        .ints(stride)
        .op(b"\x89t")
        .op(b"R")
        .stop()
}

/// A float32 tensor read from a storage holding `storage`.
fn read_tensor(storage: &[f32], offset: i64, size: &[i64], stride: &[i64]) -> Result<Value, PthError> {
    let bytes: Vec<u8> = storage.iter().flat_map(|x| x.to_le_bytes()).collect();
    let numel = i64::try_from(storage.len()).expect("small storage");
    read_pth_bytes(&archive(&tensor_pickle(numel, offset, size, stride), &[("0", &bytes)]))
}

#[test]
fn hand_built_view_is_gathered_in_row_major_order() {
    let storage: Vec<f32> = (0..12).map(|i| i as f32).collect();
    // A 2x3 view starting at element 1, walking columns of a 3x4 matrix.
    let value = read_tensor(&storage, 1, &[2, 3], &[1, 4]).expect("view reads");
    let tensor = value.as_tensor().expect("tensor");
    assert_eq!(tensor.shape, [2, 3]);
    assert_eq!(tensor.to_f32_vec(), [1.0, 5.0, 9.0, 2.0, 6.0, 10.0]);
}

#[test]
fn hand_written_opcodes_decode_like_python() {
    let pickle = Pickle::new()
        .op(b"(")
        .op(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff") // LONG1: -1 in 9 bytes
        .op(b"\x8b\x02\x00\x00\x00\x00\x01") // LONG4: 256
        .op(b"M\x01\x02") // BININT2: 513
        .op(b"J\xfe\xff\xff\xff") // BININT: -2
        .op(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00") // BINFLOAT: 1.5, big-endian
        .op(b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi") // BINUNICODE8
        .op(b"U\x02py") // SHORT_BINSTRING
        .op(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00\x07") // BINBYTES8
        .op(b"(K\x01K\x02l") // MARK, 1, 2, LIST
        .op(b"(X\x01\x00\x00\x00kK\x03d") // MARK, 'k', 3, DICT
        .op(b"N2") // None, DUP
        .op(b"(K\x09K\x091") // MARK 9 9 POP_MARK
        .op(b"N0") // None POP
        .op(b"t")
        .stop();
    let value = read_pickle(&pickle).expect("pickle reads");
    assert_eq!(
        value,
        Value::Tuple(vec![
            Value::Int(-1),
            Value::Int(256),
            Value::Int(513),
            Value::Int(-2),
            Value::Float(1.5),
            Value::Str("hi".into()),
            Value::Str("py".into()),
            Value::Bytes(vec![7]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::Dict(vec![(Value::Str("k".into()), Value::Int(3))]),
            Value::None,
            Value::None,
        ])
    );
}

#[test]
fn a_repeated_dict_key_reads_as_python_does() {
    let pickle = Pickle::new().op(b"}(").str("a").op(b"K\x01").str("a").op(b"K\x02u").stop();
    let value = read_pickle(&pickle).expect("pickle reads");
    assert_eq!(value.get("a"), Some(&Value::Int(2)));
}

// ------------------------------------------------------------ hostile files

fn assert_refused(result: Result<Value, PthError>, module: &str, name: &str) {
    match result {
        Err(error @ PthError::RefusedCallable { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{module}.{name}")), "{message}");
            assert!(message.contains("nothing was executed"), "{message}");
        }
        other => panic!("expected {module}.{name} to be refused, got {other:?}"),
    }
}

#[test]
fn os_system_in_a_reduce_is_refused() {
    // Python pickles os.system under its real module, posix.
    assert_refused(read_pth(&fixture_path("hostile_reduce.pth")), "posix", "system");
}

#[test]
fn builtins_eval_is_refused() {
    // Protocol 2 writes builtins under their Python 2 name.
    assert_refused(read_pth(&fixture_path("hostile_eval.pth")), "__builtin__", "eval");
}

#[test]
fn subprocess_popen_is_refused() {
    // Protocol 2 maps subprocess.Popen to the Python 2 module commands.
    assert_refused(read_pth(&fixture_path("hostile_popen.pth")), "commands", "Popen");
}

#[test]
fn code_running_callables_are_refused_on_every_call_path() {
    let newobj = Pickle::new().global("subprocess", "Popen").op(b")\x81").stop();
    assert_refused(read_pickle(&newobj), "subprocess", "Popen");
    let getattr = Pickle::new().global("builtins", "getattr").op(b"N").str("system").op(b"\x86R").stop();
    assert_refused(read_pickle(&getattr), "builtins", "getattr");
    let from_type = Pickle::new()
        .global("torch._tensor", "_rebuild_from_type_v2")
        .op(b"(")
        .global("os", "system")
        .global("torch", "Tensor")
        .op(b"(")
        .str("echo pwned")
        .op(b"t}tR")
        .stop();
    assert_refused(read_pickle(&from_type), "os", "system");
}

#[test]
fn a_global_that_is_never_called_stays_inert() {
    let pickle = Pickle::new().global("posix", "system").stop();
    assert_eq!(
        read_pickle(&pickle).expect("a bare reference reads"),
        Value::Global { module: "posix".into(), name: "system".into() }
    );
}

#[test]
fn an_unknown_class_becomes_an_object_with_its_state() {
    let pickle = Pickle::new()
        .global("my.module", "Thing")
        .op(b"K\x01\x85R") // Thing(1)
        .op(b"}")
        .str("field")
        .op(b"K\x02sb") // BUILD {'field': 2}
        .stop();
    let value = read_pickle(&pickle).expect("pickle reads");
    assert_eq!(
        value,
        Value::Object {
            class: Box::new(Value::Global { module: "my.module".into(), name: "Thing".into() }),
            args: vec![Value::Int(1)],
            state: Some(Box::new(Value::Dict(vec![(Value::Str("field".into()), Value::Int(2))]))),
        }
    );
    assert_eq!(value.get("field").and_then(Value::as_i64), Some(2));
}

// ------------------------------------------------------------ broken archives

fn assert_not_archive(result: Result<Value, PthError>, needle: &str) {
    match result {
        Err(error @ PthError::NotArchive { .. }) => {
            let message = error.to_string();
            assert!(message.starts_with("not a torch.save zip archive"), "{message}");
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("expected NotArchive, got {other:?}"),
    }
}

#[test]
fn files_that_are_not_zip_archives_are_rejected() {
    assert_not_archive(read_pth_bytes(b""), "");
    assert_not_archive(read_pth_bytes(b"model weights, honest"), "");
    assert_not_archive(read_pth(&fixture_path("legacy.pth")), "legacy torch.save format");
    let no_pickle = zip_entries(&[("archive/weights.bin".to_string(), vec![0; 8])], CompressionMethod::Stored);
    assert_not_archive(read_pth_bytes(&no_pickle), "data.pkl");
}

#[test]
fn a_missing_file_names_its_path() {
    let error = read_pth(&fixture_path("no_such_file.pth")).expect_err("missing file");
    assert!(matches!(error, PthError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no_such_file.pth"), "{error}");
}

#[test]
fn every_truncation_of_a_zip_is_an_error() {
    let bytes = fixture_bytes("views.pth");
    for len in (0..bytes.len()).step_by(13).chain(bytes.len() - 30..bytes.len()) {
        assert!(read_pth_bytes(&bytes[..len]).is_err(), "cut at {len} read fine");
    }
}

#[test]
fn corrupted_zip_bytes_never_panic() {
    let bytes = fixture_bytes("views.pth");
    for at in (0..bytes.len()).step_by(5) {
        let mut corrupted = bytes.clone();
        corrupted[at] ^= 0x5a;
        // Ok where the byte does not matter (a timestamp), Err elsewhere.
        let _ = read_pth_bytes(&corrupted);
    }
}

#[test]
fn a_corrupted_storage_fails_its_checksum() {
    let mut bytes = fixture_bytes("views.pth");
    let data_start = {
        let mut zip = ZipArchive::new(Cursor::new(&bytes)).expect("zip");
        let entry = zip.by_name("views/data/0").expect("storage 0");
        usize::try_from(entry.data_start()).expect("offset")
    };
    bytes[data_start] ^= 0xff;
    match read_pth_bytes(&bytes) {
        Err(error @ PthError::BadEntry { .. }) => {
            assert!(error.to_string().contains("data/0"), "{error}")
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn compressed_entries_and_another_folder_name_read_the_same() {
    let entries: Vec<(String, Vec<u8>)> = unzip_entries(&fixture_bytes("demo_small.pth"))
        .into_iter()
        .map(|(name, data)| (name.replacen("demo_small/", "renamed/", 1), data))
        .collect();
    let deflated = zip_entries(&entries, CompressionMethod::Deflated);
    assert_eq!(read_pth_bytes(&deflated).expect("deflated reads"), read_fixture("demo_small.pth"));
}

#[test]
fn a_missing_storage_entry_is_named() {
    let bytes = edited_fixture("views.pth", |entries| entries.retain(|(name, _)| name != "views/data/3"));
    match read_pth_bytes(&bytes) {
        Err(error @ PthError::MissingStorage { .. }) => {
            assert_eq!(error.to_string(), "tensor storage data/3 is missing from the archive");
        }
        other => panic!("expected a missing storage, got {other:?}"),
    }
}

#[test]
fn a_big_endian_archive_is_rejected() {
    let bytes = edited_fixture("views.pth", |entries| {
        for (name, data) in entries.iter_mut() {
            if name.ends_with("/byteorder") {
                *data = b"big".to_vec();
            }
        }
    });
    let error = read_pth_bytes(&bytes).expect_err("big-endian");
    assert!(matches!(&error, PthError::UnsupportedByteOrder { order } if order == "big"), "{error:?}");
}

#[test]
fn complex_tensors_are_an_unsupported_storage() {
    let error = read_pth(&fixture_path("complex.pth")).expect_err("complex64");
    assert!(
        matches!(&error, PthError::UnsupportedStorage { module, name } if module == "torch" && name == "ComplexFloatStorage"),
        "{error:?}"
    );
}

// ------------------------------------------------------------ broken pickles

/// views.pth with its data.pkl replaced.
fn views_with_pickle(pickle: &[u8]) -> Vec<u8> {
    edited_fixture("views.pth", |entries| {
        for (name, data) in entries.iter_mut() {
            if name.ends_with("/data.pkl") {
                *data = pickle.to_vec();
            }
        }
    })
}

fn views_pickle() -> Vec<u8> {
    unzip_entries(&fixture_bytes("views.pth"))
        .into_iter()
        .find(|(name, _)| name.ends_with("/data.pkl"))
        .expect("data.pkl")
        .1
}

#[test]
fn every_truncation_of_a_pickle_is_a_truncated_pickle() {
    let pickle = views_pickle();
    for len in 0..pickle.len() {
        match read_pth_bytes(&views_with_pickle(&pickle[..len])) {
            Err(PthError::TruncatedPickle { offset }) => {
                assert!(offset <= len, "cut at {len}: offset {offset}")
            }
            other => panic!("cut at {len}: {other:?}"),
        }
    }
}

#[test]
fn randomly_corrupted_pickles_never_panic() {
    let pickle = views_pickle();
    // xorshift64, so every run tries the same corruptions.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failed = 0;
    for _ in 0..1500 {
        let mut corrupted = pickle.clone();
        for _ in 0..=random() % 3 {
            let at = (random() % corrupted.len() as u64) as usize;
            corrupted[at] = random() as u8;
        }
        // Ok where the change is harmless (a digit of a float), Err elsewhere.
        if read_pth_bytes(&views_with_pickle(&corrupted)).is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "no corruption was noticed");
}

fn assert_malformed(result: Result<Value, PthError>, needle: &str) {
    match result {
        Err(error @ PthError::MalformedPickle { .. }) => {
            assert!(error.to_string().contains(needle), "{error}");
        }
        other => panic!("expected a malformed pickle ({needle}), got {other:?}"),
    }
}

#[test]
fn a_memo_slot_never_written_is_malformed() {
    assert_malformed(read_pickle(b"\x80\x02h\x05."), "memo slot 5");
    assert_malformed(read_pickle(b"\x80\x02j\x00\x00\x01\x00."), "memo slot 65536");
}

#[test]
fn stack_underflow_is_malformed() {
    for pickle in [
        &b"\x80\x02."[..], // STOP on an empty stack
        b"\x80\x02a.",     // APPEND with nothing
        b"\x80\x02N(a.",   // APPEND reaching below a MARK
        b"\x80\x02NR.",    // REDUCE with one item
        b"\x80\x02\x86.",  // TUPLE2 with nothing
        b"\x80\x020.",     // POP of nothing
        b"\x80\x02q\x00.", // BINPUT with nothing
    ] {
        assert_malformed(read_pickle(pickle), "stack underflow");
    }
    assert_malformed(read_pickle(b"\x80\x02t."), "no MARK");
}

#[test]
fn wrongly_typed_operands_are_malformed() {
    assert_malformed(read_pickle(b"\x80\x02K\x01K\x02a."), "cannot append to a int");
    assert_malformed(read_pickle(b"\x80\x02N(K\x01u."), "even number");
    assert_malformed(read_pickle(b"\x80\x02K\x01N\x85R."), "what REDUCE calls should be a global");
    assert_malformed(read_pickle(b"\x80\x02]N\x85b."), "BUILD cannot set the state of a list");
    assert_malformed(read_pickle(&Pickle::new().op(b"K\x01\x85Q").stop()), "persistent id");
    assert_malformed(read_pickle(b"\x80\x02X\x02\x00\x00\x00\xff\xfe."), "not UTF-8");
    assert_malformed(read_pickle(b"\x80\x06N."), "protocol 6");
    let too_wide = b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.";
    assert_malformed(read_pickle(too_wide), "does not fit in 64 bits");
}

#[test]
fn pop_with_nothing_above_a_mark_drops_the_mark_like_python() {
    assert_eq!(read_pickle(b"\x80\x02N(0.").expect("pickle reads"), Value::None);
}

#[test]
fn unsupported_opcodes_are_named_with_their_offset() {
    for (pickle, opcode) in [(&b"\x80\x02\x8f."[..], 0x8f), (b"\x80\x02I01\n.", b'I'), (b"\x80\x02\xff.", 0xff)] {
        match read_pickle(pickle) {
            Err(error @ PthError::UnsupportedOpcode { .. }) => {
                assert_eq!(error.to_string(), format!("unsupported pickle opcode {opcode:#04x} at offset 2"));
            }
            other => panic!("expected opcode {opcode:#04x} to be unsupported, got {other:?}"),
        }
    }
}

#[test]
fn absurd_nesting_is_refused() {
    // Each step wraps the list in memo slot 0 in a new list, with a stack
    // that never grows: EMPTY_LIST, BINGET 0, APPEND, BINPUT 0, POP.
    let mut pickle = Pickle::new().op(b"]q\x000");
    for _ in 0..100_000 {
        pickle = pickle.op(b"]h\x00aq\x000");
    }
    let error = read_pickle(&pickle.op(b"h\x00").stop()).expect_err("too deep");
    assert!(matches!(error, PthError::TooDeep { limit: 128 }), "{error:?}");
}

#[test]
fn a_list_inside_itself_is_a_cycle() {
    let error = read_pickle(b"\x80\x02]q\x00h\x00a.").expect_err("cycle");
    assert!(matches!(error, PthError::Cycle), "{error:?}");
}

#[test]
fn exponential_sharing_hits_the_memory_budget() {
    // Each step makes a pair of the previous value twice: 2^60 leaves.
    let mut pickle = Pickle::new().op(b"Nq\x00");
    for _ in 0..60 {
        pickle = pickle.op(b"h\x00h\x00\x86q\x000");
    }
    let error = read_pickle(&pickle.op(b"h\x00").stop()).expect_err("too large");
    assert!(matches!(error, PthError::TooLarge { .. }), "{error:?}");
}

#[test]
fn a_compressed_pickle_of_millions_of_objects_hits_the_budget() {
    // Six million Nones in one list: 6 MB of pickle that deflates to a few KB.
    let mut pickle = b"\x80\x02](".to_vec();
    pickle.resize(pickle.len() + 6_000_000, b'N');
    pickle.extend_from_slice(b"e.");
    let entries = [("archive/data.pkl".to_string(), pickle)];
    let bytes = zip_entries(&entries, CompressionMethod::Deflated);
    assert!(bytes.len() < 100_000, "{} bytes", bytes.len());
    let error = read_pth_bytes(&bytes).expect_err("too large");
    assert!(matches!(error, PthError::TooLarge { .. }), "{error:?}");
}

// ------------------------------------------------------------ hostile tensors

#[test]
fn a_view_of_a_trillion_elements_over_a_small_storage_is_out_of_bounds() {
    let error = read_tensor(&[1.0; 4], 0, &[1_000_000, 1_000_000], &[1_000_000, 1]).expect_err("oob");
    assert!(error.to_string().starts_with("tensor view out of bounds of its storage"), "{error}");
}

#[test]
fn a_storage_claiming_more_elements_than_its_entry_holds_is_too_short() {
    let pickle = tensor_pickle(1_000_000_000_000, 0, &[4], &[1]);
    let error = read_pth_bytes(&archive(&pickle, &[("0", &[0; 16])])).expect_err("short storage");
    assert!(matches!(error, PthError::StorageTooShort { declared: 4_000_000_000_000, actual: 16, .. }), "{error:?}");
    // The same when the view claims all of it.
    let pickle = tensor_pickle(1_000_000_000_000, 0, &[1_000_000_000_000], &[1]);
    let error = read_pth_bytes(&archive(&pickle, &[("0", &[0; 16])])).expect_err("short storage");
    assert!(matches!(error, PthError::StorageTooShort { .. }), "{error:?}");
}

#[test]
fn negative_sizes_strides_and_offsets_are_malformed() {
    assert_malformed(read_tensor(&[0.0; 4], 0, &[-2], &[1]), "tensor size is -2");
    assert_malformed(read_tensor(&[0.0; 4], 0, &[2], &[-1]), "tensor stride is -1");
    assert_malformed(read_tensor(&[0.0; 4], -1, &[2], &[1]), "tensor storage offset is -1");
    assert_malformed(read_tensor(&[0.0; 4], 0, &[2, 2], &[1]), "2 sizes but 1 strides");
}

#[test]
fn overflowing_offsets_strides_and_sizes_are_errors() {
    let out_of_bounds = [
        read_tensor(&[0.0; 4], i64::MAX, &[2], &[1]),
        read_tensor(&[0.0; 4], 0, &[3], &[i64::MAX]),
        read_tensor(&[0.0; 4], 0, &[1 << 40], &[1 << 40]),
    ];
    for result in out_of_bounds {
        assert!(
            matches!(result, Err(PthError::ViewOutOfBounds { .. }) | Err(PthError::MalformedPickle { .. })),
            "{result:?}"
        );
    }
    assert_malformed(read_tensor(&[0.0; 4], 0, &[1 << 40, 1 << 40, 1 << 40], &[0, 0, 0]), "overflows");
    let huge_storage = Pickle::new().storage("LongStorage", 1 << 62).stop();
    assert_malformed(read_pickle(&huge_storage), "overflows");
}

#[test]
fn a_broadcast_view_too_large_for_the_budget_is_refused() {
    // 10^10 float32s from one element: a legal stride-0 view, 40 GB copied.
    let error = read_tensor(&[1.0], 0, &[100_000, 100_000], &[0, 0]).expect_err("too large");
    assert!(matches!(error, PthError::TooLarge { .. }), "{error:?}");
    // A small broadcast is fine.
    let value = read_tensor(&[1.0, 2.0], 0, &[3, 2], &[0, 1]).expect("small broadcast");
    assert_eq!(value.as_tensor().expect("tensor").to_f32_vec(), [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
}
