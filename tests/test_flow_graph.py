"""framebus.flow: the graph model, compile (every malformed graph it refuses, fusion,
manifests, routes, schemas) and flow.load from YAML and JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import flow_fns
import pytest

import framebus
from framebus import flow
from framebus.errors import FrameBusError
from framebus.flow import FlowError


def noop(x: object) -> None:
    return None


def chain() -> flow.Graph:
    g = flow.Graph("ingest")
    (
        g.source("gen", flow_fns.ten)
        >> g.map("parse", flow_fns.double)
        >> g.filter("valid", flow_fns.odd)
        >> g.accumulate("batch", count=3)
        >> g.sink("store", noop)
    )
    return g


def test_flow_error_is_a_framebus_error_and_a_value_error() -> None:
    assert issubclass(FlowError, FrameBusError) and issubclass(FlowError, ValueError)


def test_rshift_returns_the_right_hand_node_and_connect_takes_names() -> None:
    g = flow.Graph("g")
    a = g.source("a", flow_fns.ten)
    b = g.map("b", flow_fns.double)
    assert (a >> b) is b
    g.sink("c", noop)
    assert (b >> "c") is g.node("c")
    g.sink("d", noop)
    g.connect("b", "d")
    assert g.edges == [("a", "b"), ("b", "c"), ("b", "d")]


# -- errors -------------------------------------------------------------------------


def test_duplicate_node_name() -> None:
    g = flow.Graph("g")
    g.source("a", flow_fns.ten)
    with pytest.raises(FlowError, match="node 'a': duplicate name"):
        g.map("a", flow_fns.double)


def test_duplicate_edge() -> None:
    g = flow.Graph("g")
    g.connect("a", "b")
    with pytest.raises(FlowError, match="edge 'a' -> 'b': duplicate edge"):
        g.connect("a", "b")


def test_unknown_edge_end() -> None:
    g = flow.Graph("g")
    g.source("a", flow_fns.ten)
    g.connect("a", "nowhere")
    with pytest.raises(FlowError, match="edge 'a' -> 'nowhere': unknown node 'nowhere'"):
        flow.compile(g)


def test_cycle() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.map("a", flow_fns.double) >> g.map("b", flow_fns.double)
    g.connect("b", "a")
    g.sink("k", noop)
    g.connect("b", "k")
    with pytest.raises(FlowError, match="graph 'g': cycle a -> b -> a"):
        flow.compile(g)


def test_self_loop() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.map("a", flow_fns.double)
    g.connect("a", "a")
    with pytest.raises(FlowError, match="edge 'a' -> 'a': cycle a -> a"):
        flow.compile(g)


def test_source_with_inputs() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.source("t", flow_fns.ten)
    with pytest.raises(FlowError, match=r"source 't' has inputs \(edge 's' -> 't'\)"):
        flow.compile(g)


def test_sink_with_outputs() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.sink("k", noop) >> g.sink("k2", noop)
    with pytest.raises(FlowError, match=r"sink 'k' has outputs \(edge 'k' -> 'k2'\)"):
        flow.compile(g)


def test_node_no_source_reaches() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.sink("k", noop)
    g.map("orphan", flow_fns.double) >> g.sink("k2", noop)
    with pytest.raises(FlowError, match="node 'orphan': no source reaches it"):
        flow.compile(g)


def test_empty_graph() -> None:
    with pytest.raises(FlowError, match="graph 'g' has no nodes"):
        flow.compile(flow.Graph("g"))


def test_callable_that_cannot_be_imported() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.map("m", "no_such_module_xyz:f") >> g.sink("k", noop)
    with pytest.raises(FlowError, match=r"node 'm': cannot import 'no_such_module_xyz:f'"):
        flow.compile(g)
    g2 = flow.Graph("g")
    g2.source("s", flow_fns.ten) >> g2.map("m", "flow_fns:nope") >> g2.sink("k", noop)
    with pytest.raises(FlowError, match=r"node 'm': cannot import 'flow_fns:nope'"):
        flow.compile(g2)
    g3 = flow.Graph("g")
    g3.source("s", flow_fns.ten) >> g3.map("m", "flow_fns") >> g3.sink("k", noop)
    with pytest.raises(FlowError, match="node 'm': callable .* not of the form"):
        flow.compile(g3)


def test_callable_that_is_not_callable() -> None:
    g = flow.Graph("g")
    g.source("s", flow_fns.ten) >> g.map("m", "flow_fns:NOT_CALLABLE") >> g.sink("k", noop)
    with pytest.raises(FlowError, match="node 'm': 'flow_fns:NOT_CALLABLE' is not callable"):
        flow.compile(g)
    with pytest.raises(FlowError, match="node 'a': option until=5 is invalid"):
        flow.Graph("g").accumulate("a", until=5)  # refused when the node is added
    g3 = flow.Graph("g")
    g3.source("s", flow_fns.ten) >> g3.accumulate("a", until="flow_fns:NOT_CALLABLE")
    with pytest.raises(FlowError, match="node 'a': option until: .* is not callable"):
        flow.compile(g3)


@pytest.mark.parametrize(
    ("kind", "option", "value", "expected"),
    [
        ("map", "deadline", 0, "a number > 0"),
        ("map", "deadline", "1", "a number > 0"),
        ("map", "on_deadline", "skip", "'count' or 'drop'"),
        ("map", "retries", -1, "an int >= 0"),
        ("map", "retries", True, "an int >= 0"),
        ("map", "backoff", -0.1, "a number >= 0"),
        ("map", "rate", 0, "a number > 0"),
        ("map", "parallelism", 0, "an int >= 1"),
        ("map", "pure", 1, "True or False"),
        ("sink", "overflow", "spill", "'block', 'drop', 'drop_oldest'"),
        ("sink", "window", 0, "an int >= 1"),
        ("accumulate", "count", 0, "an int >= 1 or None"),
        ("accumulate", "size", 1.5, "an int >= 1 or None"),
        ("accumulate", "ttl", -1, "a number > 0"),
        ("accumulate", "until", 5, "a callable"),
        ("source", "content_type", "text/plain", "'application/msgpack' or"),
    ],
)
def test_bad_option_value(kind: str, option: str, value: object, expected: str) -> None:
    g = flow.Graph("g")
    fn = None if kind == "accumulate" else flow_fns.double
    with pytest.raises(
        FlowError,
        match=f"node 'n': option {option}=.* is invalid: expected " + expected.replace("(", r"\("),
    ):
        g.add("n", kind, fn, **{option: value})


def test_unknown_option_and_kind_and_name() -> None:
    g = flow.Graph("g")
    with pytest.raises(FlowError, match="node 'n': unknown option 'retries' for a source node"):
        g.source("n", flow_fns.ten, retries=1)
    with pytest.raises(FlowError, match="node 'n': unknown option 'pure' for a sink node"):
        g.sink("n", noop, pure=False)
    with pytest.raises(FlowError, match="node 'n': unknown kind 'join'"):
        g.add("n", "join", noop)
    with pytest.raises(FlowError, match="node 'n': a map node needs a callable"):
        g.add("n", "map")
    with pytest.raises(FlowError, match="node name 'a.b' is invalid"):
        g.map("a.b", noop)
    with pytest.raises(FlowError, match="graph name '' is invalid"):
        flow.Graph("")


# -- what compile produces ----------------------------------------------------------


def test_manifests_routes_schemas_and_stages() -> None:
    plan = flow.compile(chain())
    assert plan.stages == ["gen", "parse+valid", "batch", "store"]
    assert [m["name"] for m in plan.manifests] == ["gen", "parse", "valid", "batch", "store"]
    parse = plan.manifests[1]
    assert parse["kind"] == "map"
    assert parse["callable"] == "flow_fns:double"
    assert parse["stage"] == "parse+valid"
    assert parse["options"]["pure"] is True and parse["options"]["retries"] == 0
    assert plan.manifests[3]["callable"] is None
    assert plan.manifests[3]["options"]["count"] == 3
    assert plan.manifests[4]["callable"] == "test_flow_graph:noop"
    assert plan.routes[0] == {
        "src": "gen",
        "dst": "parse",
        "topic": "_flow.ingest.gen.parse",
        "port": "ingest.gen.parse",
        "window": 64,
        "overflow": "block",
    }
    assert plan.routes[1]["port"] is None  # inside the fused stage parse+valid
    assert [(r["src"], r["dst"]) for r in plan.routes] == [
        ("gen", "parse"),
        ("parse", "valid"),
        ("valid", "batch"),
        ("batch", "store"),
    ]
    assert plan.schemas == [
        {"src": a, "dst": b, "content_type": "application/msgpack", "schema_ver": 1}
        for a, b in [("gen", "parse"), ("parse", "valid"), ("valid", "batch"), ("batch", "store")]
    ]
    json.dumps([plan.manifests, plan.routes, plan.schemas])  # plain data


def test_declared_content_type_passes_through_a_filter() -> None:
    g = flow.Graph("g")
    (
        g.source("s", flow_fns.ten, content_type="application/octet-stream")
        >> g.filter("f", flow_fns.odd)
        >> g.sink("k", noop)
    )
    plan = flow.compile(g)
    assert [s["content_type"] for s in plan.schemas] == ["application/octet-stream"] * 2


def test_string_callables_are_imported_at_compile() -> None:
    g = flow.Graph("g")
    g.source("s", "flow_fns:ten") >> g.map("m", "flow_fns:Ns.inc") >> g.sink("k", "flow_fns:store")
    plan = flow.compile(g)
    assert plan.nodes["m"].fn is flow_fns.Ns.inc
    assert plan.manifests[1]["callable"] == "flow_fns:Ns.inc"


def test_fusion_rules() -> None:
    g = flow.Graph("g")
    s = g.source("s", flow_fns.ten)
    (
        s
        >> g.map("a", flow_fns.double)
        >> g.map("b", flow_fns.double)
        >> g.filter("c", flow_fns.odd, pure=False)
        >> g.map("d", flow_fns.double)
        >> g.map("e", flow_fns.double, parallelism=2)
        >> g.map("f", flow_fns.double)
        >> g.map("h", flow_fns.double, rate=1000.0)
        >> g.sink("k", noop)
    )
    plan = flow.compile(g)
    assert plan.stages == ["s", "a+b", "c", "d", "e", "f", "h", "k"]
    assert flow.compile(g, fuse=False).stages == ["s", "a", "b", "c", "d", "e", "f", "h", "k"]
    assert flow.FlowAdapter(fuse=False).compile(g).stages == flow.compile(g, fuse=False).stages


def test_fan_out_and_fan_in_are_not_fused_across() -> None:
    g = flow.Graph("g")
    s = g.source("s", flow_fns.ten)
    a = s >> g.map("a", flow_fns.double)
    a >> g.map("b", flow_fns.double) >> g.map("j", flow_fns.double)
    a >> g.map("c", flow_fns.double) >> "j"
    g.connect("j", g.sink("k", noop))
    plan = flow.compile(g)
    assert plan.order == ["s", "a", "b", "c", "j", "k"]
    assert plan.stages == ["s", "a", "b", "c", "j", "k"]


def test_unknown_runtime() -> None:
    plan = flow.compile(chain())
    with pytest.raises(
        FlowError, match="unknown runtime 'threads'; expected one of 'sync', 'inproc'"
    ):
        plan.run(runtime="threads")
    with pytest.raises(FlowError, match="timeout=0 is invalid"):
        plan.run(timeout=0)


def test_lower_layers_do_not_import_flow() -> None:
    root = Path(framebus.__file__).parent
    cli = root / "cli.py"
    files = [*root.glob("*.py"), *root.glob("bench/*.py"), *root.parent.glob("wal/*.py")]
    imports = re.compile(r"^\s*(from\s+(framebus\.flow|\.+flow)\b|import\s+framebus\.flow)", re.M)
    assert cli in files
    for path in files:
        if path != cli:
            assert not imports.search(path.read_text()), path
    # the command line sits above every layer: it imports the flow layer only inside
    # the commands that run it (framebus run, framebus demo)
    top_level = re.compile(r"^(from\s+(framebus\.flow|\.+flow)\b|import\s+framebus\.flow)", re.M)
    assert not top_level.search(cli.read_text())


# -- load ---------------------------------------------------------------------------

YAML_GRAPH = """\
name: ingest
nodes:
  - {name: gen, kind: source, fn: "flow_fns:ten"}
  - {name: parse, kind: map, fn: "flow_fns:double", options: {retries: 2}}
  - {name: valid, kind: filter, fn: "flow_fns:Ns.inc"}
  - name: batch
    kind: accumulate
    options: {count: 4, until: "flow_fns:longer_than_two"}
  - {name: store, kind: sink, fn: "flow_fns:store"}
edges: [[gen, parse], [parse, valid], {src: valid, dst: batch}, [batch, store]]
"""


def test_load_yaml_runs(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(YAML_GRAPH)
    g = flow.load(path)
    assert g.name == "ingest" and list(g.nodes) == ["gen", "parse", "valid", "batch", "store"]
    plan = flow.compile(g)
    assert plan.stages == ["gen", "parse+valid", "batch", "store"]
    assert plan.manifests[1]["options"]["retries"] == 2
    assert plan.manifests[3]["options"]["until"] == "flow_fns:longer_than_two"
    flow_fns.STORED.clear()
    plan.run()
    # double, then Ns.inc as a filter (2x+1 is never 0), batches of 3 by the predicate
    assert flow_fns.STORED == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    flow_fns.STORED.clear()


def test_load_json_and_yml(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load(YAML_GRAPH)
    (tmp_path / "g.json").write_text(json.dumps(doc))
    (tmp_path / "g.yml").write_text(YAML_GRAPH)
    a = flow.compile(flow.load(tmp_path / "g.json"))
    b = flow.compile(flow.load(str(tmp_path / "g.yml")))
    assert a.manifests == b.manifests and a.routes == b.routes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: g\nnodes: 3\n", "'nodes' must be a list"),
        ("[1, 2]", "expected a mapping with name, nodes and edges"),
        ("name: g\nnodes: []\nextra: 1\n", "unknown field 'extra'"),
        ("nodes: []\n", "missing field 'name'"),
        ("name: g\nnodes: [{name: a, kind: join, fn: 'x:y'}]\n", "node 'a': bad kind 'join'"),
        ("name: g\nnodes: [{name: a, kind: map}]\n", "node 'a': field fn must be"),
        (
            "name: g\nnodes: [{name: a, kind: accumulate, fn: 'x:y'}]\n",
            "node 'a': an accumulate node takes no fn",
        ),
        (
            "name: g\nnodes: [{name: a, kind: map, fn: 'x:y', colour: red}]\n",
            "node 'a': unknown field 'colour'",
        ),
        (
            "name: g\nnodes: [{name: a, kind: source, fn: 'flow_fns:ten', options: 3}]\n",
            "node 'a': field options must be a mapping",
        ),
        (
            "name: g\nnodes: [{name: a, kind: source, fn: 'flow_fns:ten', options: {rate: -1}}]\n",
            "node 'a': option rate=-1 is invalid",
        ),
        (
            "name: g\nnodes: [{name: a, kind: source, fn: 'flow_fns:ten'},"
            " {name: m, kind: map, fn: 'nomod_xyz:f'}]\nedges: [[a, m]]\n",
            "node 'm': cannot import 'nomod_xyz:f'",
        ),
        (
            "name: g\nnodes: [{name: a, kind: source, fn: 'flow_fns:ten'}]\nedges: [[a]]\n",
            r"edges\[0\]: expected \[src, dst\]",
        ),
        (
            "name: g\nnodes: [{name: a, kind: source, fn: 'flow_fns:ten'}]\nedges: [[a, b]]\n",
            "edge 'a' -> 'b': unknown node 'b'",
        ),
        ("name: g\nnodes: [\n", "not valid YAML"),
    ],
)
def test_load_errors_name_the_file_and_the_node(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FlowError, match=f"^{path}: .*{message}"):
        flow.load(path)


def test_load_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match=f"{tmp_path / 'none.yaml'}: no such file"):
        flow.load(tmp_path / "none.yaml")
    (tmp_path / "g.toml").write_text("")
    with pytest.raises(FlowError, match="g.toml: unknown graph file type '.toml'"):
        flow.load(tmp_path / "g.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FlowError, match="bad.json: line 1: not valid JSON"):
        flow.load(tmp_path / "bad.json")
