"""Protected bundles: encrypted (in memory only), signed, obfuscated — and every way a loader refuses."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.errors import BundleError, InputError, PrecisionError
from cvdeploy.runtimes import RuntimeOptions, registry
from cvdeploy.security.bundlekeys import BundleKeys, using_keys
from cvdeploy.security.keyfiles import KeyFiles, keygen
from cvdeploy.security.protect import ProtectOptions, protect

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return keygen(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return keygen(tmp_path_factory.mktemp("other") / "k")


@pytest.fixture(scope="module")
def protected(tiny_bundle_path: Path, keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protected") / "tiny-protected.cvd"
    protect(tiny_bundle_path, out, ProtectOptions(keys.model_key, keys.signing_key, obfuscate=True, seed=7))
    return out


def full_keys(keys: KeyFiles) -> BundleKeys:
    return BundleKeys(keys.model_key, keys.public_key)


def outputs(bundle: Bundle, art: str, x: np.ndarray) -> list[np.ndarray]:
    rt = bundle.load_runtime(art)
    return rt.run({rt.inputs[0].name: x})


def decrypted(bundle_dir: Path, keys: KeyFiles, art: str) -> list[bytes]:
    from cvdeploy.security.bundlekeys import artifact_blobs

    b = Bundle.load(bundle_dir, keys=full_keys(keys))
    return artifact_blobs(b, b.artifact(art), b.keys)


def test_keygen_writes_private_files_and_never_overwrites(keys: KeyFiles) -> None:
    assert stat.S_IMODE(keys.model_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.signing_key.stat().st_mode) == 0o600
    from cvdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        keygen(keys.model_key.parent)


def test_layout_no_plaintext_model_on_disk(protected: Path, tiny_bundle_path: Path) -> None:
    files = sorted(str(p.relative_to(protected)) for p in protected.rglob("*") if p.is_file())
    assert files == ["cvdeploy.yaml", "cvdeploy.yaml.sig", "onnx-fp32.onnx.enc",
                     "openvino-fp32/model.bin.enc", "openvino-fp32/model.xml.enc", "profile.json"]  # fmt: skip
    m = yaml.safe_load((protected / "cvdeploy.yaml").read_text())
    assert m["protection"]["encryption"] == "AES-256-GCM" and m["protection"]["obfuscated"] is True
    assert "weights" not in m["provenance"]["source"]
    # a slice of real weights from the original files appears nowhere in the protected bundle
    original = (tiny_bundle_path / "openvino-fp32" / "model.bin").read_bytes()
    probe = original[len(original) // 2 : len(original) // 2 + 64]
    assert probe in (tiny_bundle_path / "openvino-fp32" / "model.bin").read_bytes()
    for p in protected.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            assert probe not in blob and b"onnx::Conv" not in blob, p


def test_loads_with_keys_and_matches_the_original(
    protected: Path, tiny_bundle_path: Path, keys: KeyFiles
) -> None:
    x = np.random.default_rng(0).random((2, 3, 320, 320), dtype=np.float32)
    plain = Bundle.load(tiny_bundle_path)
    prot = Bundle.load(protected, keys=full_keys(keys))
    for art in ("onnx-fp32", "openvino-fp32"):
        want, got = outputs(plain, art, x), outputs(prot, art, x)
        assert len(want) == len(got)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
        assert prot.load_runtime(art).execution().precision == "fp32"


def test_encrypted_model_never_reaches_the_engine_cache(
    protected: Path, keys: KeyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine cache would write the decrypted model's compiled form in clear: encrypted loads skip it."""
    monkeypatch.setenv("CVDEPLOY_ENGINE_CACHE", str(tmp_path / "engines"))
    for art in ("onnx-fp32", "openvino-fp32"):
        rt = Bundle.load(protected, keys=full_keys(keys)).load_runtime(art)
        assert rt.cached_graph is None  # type: ignore[attr-defined]
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").rglob("*"))


def test_parity_of_obfuscation_is_recorded_like_an_export(protected: Path) -> None:
    b = Bundle.load(protected)
    for art in b.manifest.artifacts:
        p = art.parity
        assert p is not None and p.passed and p.reference == f"{art.name} before obfuscation"
        assert p.images == 4 and p.max_abs_diff <= 1e-5 and p.cosine > 0.99999
        assert art.execution is not None and art.execution["precision"] == "fp32"


def test_obfuscated_onnx_has_no_original_names_or_metadata(
    protected: Path, tiny_bundle_path: Path, keys: KeyFiles
) -> None:
    import onnx

    before = onnx.load(str(tiny_bundle_path / "onnx-fp32.onnx"))
    after = onnx.load_model_from_string(decrypted(protected, keys, "onnx-fp32")[0])
    interface = {i.name for i in before.graph.input} | {o.name for o in before.graph.output} | {""}
    old = {n.name for n in before.graph.node} | {i.name for i in before.graph.initializer} | {
        t for n in before.graph.node for t in (*n.input, *n.output)}  # fmt: skip
    new = {n.name for n in after.graph.node} | {i.name for i in after.graph.initializer} | {
        t for n in after.graph.node for t in (*n.input, *n.output)}  # fmt: skip
    assert (old - interface) and not ((old - interface) & new), "an original name survived"
    assert {i.name for i in after.graph.input} | {o.name for o in after.graph.output} | {""} == interface
    assert not after.metadata_props and before.metadata_props  # Ultralytics-style metadata was there
    assert (
        not after.doc_string and not after.producer_name and not any(n.doc_string for n in after.graph.node)
    )
    dummies = sum(n.op_type == "Identity" for n in after.graph.node) - sum(
        n.op_type == "Identity" for n in before.graph.node
    )
    assert dummies >= 3
    assert len(after.graph.node) == len(before.graph.node) + dummies


def test_obfuscated_ir_has_no_original_names_or_framework_info(
    protected: Path, tiny_bundle_path: Path, keys: KeyFiles
) -> None:
    import xml.etree.ElementTree as ET

    before = ET.fromstring((tiny_bundle_path / "openvino-fp32" / "model.xml").read_bytes())
    xml, weights = decrypted(protected, keys, "openvino-fp32")
    after = ET.fromstring(xml)
    kept = {"Parameter", "Result"}
    old = {layer.get("name") for layer in before.iter("layer") if layer.get("type") not in kept}
    new = {layer.get("name") for layer in after.iter("layer")}
    assert old and not (old & new)
    assert weights == (tiny_bundle_path / "openvino-fp32" / "model.bin").read_bytes()
    text = xml.decode()
    for leak in ("onnx::", "conversion_parameters", "input_model", "framework", "circle", "onnx_Frontend_IR"):
        assert leak not in text, leak


def test_wrong_key_no_key_and_missing_key_file(
    protected: Path, keys: KeyFiles, other_keys: KeyFiles, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="is encrypted: pass --decrypt-key"):
        Bundle.load(protected).load_runtime("onnx-fp32")
    b = Bundle.load(protected, keys=BundleKeys(other_keys.model_key))
    with pytest.raises(BundleError, match=r"was encrypted with key [0-9a-f]{16}, not with the given key"):
        b.load_runtime("onnx-fp32")
    with pytest.raises(InputError, match="cannot read the key file"):
        Bundle.load(protected, keys=BundleKeys(tmp_path / "none.key")).load_runtime()
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(InputError, match="not an AES-256 model key"):
        Bundle.load(protected, keys=BundleKeys(tmp_path / "junk.key")).load_runtime()


def encrypted_only(tiny_bundle_path: Path, keys: KeyFiles, out: Path) -> Path:
    protect(tiny_bundle_path, out, ProtectOptions(encrypt_key=keys.model_key))
    return out


def test_a_modified_encrypted_file_is_refused_even_with_its_hash_updated(
    tiny_bundle_path: Path, keys: KeyFiles, tmp_path: Path
) -> None:
    import hashlib

    out = encrypted_only(tiny_bundle_path, keys, tmp_path / "enc.cvd")
    f = out / "onnx-fp32.onnx.enc"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        Bundle.load(out)
    m = yaml.safe_load((out / "cvdeploy.yaml").read_text())  # an attacker fixing the hash too
    m["artifacts"][0]["sha256"]["onnx-fp32.onnx.enc"] = hashlib.sha256(bytes(data)).hexdigest()
    (out / "cvdeploy.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(BundleError, match="decryption failed — the file was modified"):
        Bundle.load(out, keys=BundleKeys(keys.model_key)).load_runtime("onnx-fp32")


def test_a_file_swapped_for_another_name_fails_authentication(
    tiny_bundle_path: Path, keys: KeyFiles, tmp_path: Path
) -> None:
    from cvdeploy.security.encryption import decrypt_blob
    from cvdeploy.security.keyfiles import read_model_key

    out = encrypted_only(tiny_bundle_path, keys, tmp_path / "enc.cvd")
    blob = (out / "openvino-fp32" / "model.xml.enc").read_bytes()
    key = read_model_key(keys.model_key)
    assert decrypt_blob(key, blob, "openvino-fp32/model.xml").startswith(b"<?xml")
    with pytest.raises(BundleError, match="decryption failed"):
        decrypt_blob(key, blob, "openvino-fp32/model.bin")


@pytest.mark.parametrize("where", ["manifest", "artifact", "signature"])
def test_one_flipped_byte_in_a_signed_bundle_is_refused(
    protected: Path, keys: KeyFiles, tmp_path: Path, where: str
) -> None:
    copy = tmp_path / "copy.cvd"
    shutil.copytree(protected, copy)
    Bundle.load(copy, keys=full_keys(keys))  # intact: accepted
    target = {"manifest": copy / "cvdeploy.yaml", "artifact": copy / "openvino-fp32" / "model.bin.enc",
              "signature": copy / "cvdeploy.yaml.sig"}[where]  # fmt: skip
    data = bytearray(target.read_bytes())
    if where == "manifest":
        pos = data.index(b"conf: ") + 6  # a threshold, the kind of edit that would matter
        data[pos] = ord("9") if data[pos] != ord("9") else ord("8")
    elif where == "signature":
        doc = json.loads(data)
        sig = bytearray(__import__("base64").b64decode(doc["signature"]))
        sig[5] ^= 0x01
        doc["signature"] = __import__("base64").b64encode(bytes(sig)).decode()
        data = bytearray(json.dumps(doc).encode())
    else:
        data[1000] ^= 0x80
    target.write_bytes(bytes(data))
    match = "does not match its recorded sha256" if where == "artifact" else "bad signature"
    with pytest.raises(BundleError, match=match):
        Bundle.load(copy, keys=full_keys(keys))


def test_unsigned_or_otherwise_signed_bundles_are_refused_with_a_trust_key(
    tiny_bundle_path: Path, protected: Path, keys: KeyFiles, other_keys: KeyFiles
) -> None:
    with pytest.raises(BundleError, match="is not signed"):
        Bundle.load(tiny_bundle_path, keys=BundleKeys(trust_key=keys.public_key))
    with pytest.raises(BundleError, match="signed by another key"):
        Bundle.load(protected, keys=BundleKeys(keys.model_key, other_keys.public_key))
    with pytest.raises(InputError, match=r"not a PEM public key|not an Ed25519"):
        Bundle.load(protected, keys=BundleKeys(trust_key=keys.model_key))


def test_signed_only_bundle_runs_the_checked_bytes(
    tiny_bundle_path: Path, keys: KeyFiles, tmp_path: Path
) -> None:
    out = tmp_path / "signed.cvd"
    protect(tiny_bundle_path, out, ProtectOptions(sign_key=keys.signing_key))
    assert (out / "onnx-fp32.onnx").is_file() and (out / "source").exists() is False
    plain = Bundle.load(out)
    assert plain.load_runtime("onnx-fp32").inputs[0].name == "images"
    trusted = Bundle.load(out, keys=BundleKeys(trust_key=keys.public_key))
    assert trusted.load_runtime("openvino-fp32").execution().precision == "fp32"


def test_memory_loading_keeps_precision_pinning(tiny_bundle_path: Path) -> None:
    onnx_bytes = (tiny_bundle_path / "onnx-fp32.onnx").read_bytes()
    ir = [(tiny_bundle_path / "openvino-fp32" / f).read_bytes() for f in ("model.xml", "model.bin")]
    with pytest.raises(PrecisionError, match="would execute fp32, not the fp16"):
        registry.engine("onnxruntime").load_memory("m.onnx", [onnx_bytes], RuntimeOptions(precision="fp16"))
    with pytest.raises(PrecisionError, match="would execute fp32, not the int8"):
        registry.engine("openvino").load_memory("m.xml", ir, RuntimeOptions(precision="int8"))
    from cvdeploy.errors import ModelError

    with pytest.raises(ModelError, match="cannot load a model from memory"):
        registry.engine("torch").load_memory("m.pt", [b""], RuntimeOptions())


def test_ambient_keys_reach_library_code_and_commands_needing_files_refuse(
    protected: Path, keys: KeyFiles
) -> None:
    from cvdeploy.pipeline import Pipeline

    with using_keys(full_keys(keys)):
        pipe = Pipeline.from_bundle(str(protected))  # Bundle.load deep inside picks the keys up
        assert pipe.runtime.inputs[0].name == "images"
    with (
        using_keys(BundleKeys(keys.model_key, needs_files="optimize")),
        pytest.raises(BundleError, match="optimize the unprotected"),
    ):
        Bundle.load(protected)


def test_protect_refuses_what_it_cannot_do(
    protected: Path, tiny_bundle_path: Path, keys: KeyFiles, tmp_path: Path
) -> None:
    from cvdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing to do"):
        protect(tiny_bundle_path, tmp_path / "x.cvd", ProtectOptions())
    with pytest.raises(BundleError, match="already protected"):
        protect(protected, tmp_path / "y.cvd", ProtectOptions(sign_key=keys.signing_key))
    (tmp_path / "busy.cvd").mkdir()
    (tmp_path / "busy.cvd" / "f").write_text("x")
    with pytest.raises(BundleError, match="not empty"):
        protect(tiny_bundle_path, tmp_path / "busy.cvd", ProtectOptions(sign_key=keys.signing_key))


def test_obfuscating_a_trained_detector_keeps_its_detections(tmp_path: Path) -> None:
    out = tmp_path / "zoo.cvd"
    protect("zoo:n", out, ProtectOptions(obfuscate=True, seed=1))
    art = Bundle.load(out).artifact("onnx-fp32")
    assert art.parity is not None and art.parity.box_agreement == 1.0 and art.parity.max_abs_diff <= 1e-4


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from cvdeploy.cli.main import run

    code = run(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_predict_inspect_optimize_on_a_protected_bundle(
    protected: Path, keys: KeyFiles, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = ["--decrypt-key", str(keys.model_key), "--trust-key", str(keys.public_key)]
    code, out, err = run_cli(["predict", str(protected), str(photo_dir), "--json", *k], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 4
    code, out, err = run_cli(["predict", str(protected), str(photo_dir), "--json"], capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "pass --decrypt-key" in err
    code, out, err = run_cli(["inspect", str(protected), *k], capsys)
    assert code == 0 and "fp32, " in out
    code, out, err = run_cli(["optimize", str(protected), "--int8", *k], capsys)
    assert code == 2 and "optimize the unprotected bundle" in err


def test_cli_protect_and_keygen(
    tiny_bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["protect", "keygen", "-o", str(tmp_path / "k"), "--json"], capsys)
    assert code == 0, err
    files: dict[str, Any] = json.loads(out)
    assert set(files) == {"model_key", "signing_key", "public_key"}
    code, out, err = run_cli(["protect", str(tiny_bundle_path), "-o", str(tmp_path / "p.cvd"), "--encrypt",
                              files["model_key"], "--sign", files["signing_key"], "--json"], capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["encrypted"] and doc["signed"] and not doc["obfuscated"]
    code, out, err = run_cli(["protect", "keygen", "-o", str(tmp_path / "k2"), "--obfuscate"], capsys)
    assert code == 2 and "takes only -o" in err
    code, out, err = run_cli(["protect", str(tiny_bundle_path), "-o", str(tmp_path / "q.cvd"), "--sign",
                              files["model_key"]], capsys)  # fmt: skip
    assert code == 2 and "not an unencrypted PEM private key" in err


def test_obfuscation_is_chosen_by_the_model_format_and_refuses_others() -> None:
    from cvdeploy.errors import ModelError
    from cvdeploy.security.obfuscate import obfuscate_model

    with pytest.raises(ModelError, match=r"cannot obfuscate \.tflite models"):
        obfuscate_model(".tflite", [b"TFL3"])
