"""Behaviour of the `Hierarchy` value type: lookup, validation, serialisation, topologies."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scbranchdiff.hierarchy as hierarchy_package
from scbranchdiff.diffusion import VPSDE
from scbranchdiff.hierarchy import (
    LABEL_GUIDED,
    Branch,
    Hierarchy,
    Topology,
    is_label_guided,
    log_snr,
    parse_hierarchy_spec,
    robinson_foulds,
    time_at_log_snr,
    tree_agreement,
    triplet_agreement,
)
from scbranchdiff.hierarchy._topology import leaves

TREG = "CD4+/CD25 T Reg"


@pytest.fixture
def pbmc_like() -> Hierarchy:
    """(((TREG, CD8) B) (Mono DC)) with a name that needs quoting in Newick."""
    topology = Topology.from_nested(
        {"lymphoid": {"T": [TREG, "CD8"], "B": None}, "myeloid": ["Mono", "DC"]}
    )
    times = {
        frozenset(topology.classes): 0.6,
        frozenset([TREG, "CD8", "B"]): 0.4,
        frozenset([TREG, "CD8"]): 0.2,
        frozenset(["Mono", "DC"]): 0.3,
    }
    return Hierarchy.from_topology(topology, times)


def path_lookup(h: Hierarchy, class_idx: int, t: float) -> int:
    """The obvious (slow) lookup: walk the class's path for the branch holding t."""
    t = min(max(t, 0.0), 1.0)
    for b in h.path(h.classes[class_idx]):
        branch = h.branches[b]
        if branch.t_start <= t < branch.t_end or (t == 1.0 and branch.t_end == 1.0):
            return b
    raise AssertionError("no branch found")


# ---------------------------------------------------------------------- random hierarchies
@st.composite
def hierarchies(draw: st.DrawFn) -> Hierarchy:
    """Random trees (binary or multifurcating, 1-9 classes) with random split times."""
    n = draw(st.integers(1, 9))
    names = [f"type {i}" if i % 2 else f"t{i}" for i in range(n)]
    nodes_tree: list = list(names)
    while len(nodes_tree) > 1:
        k = draw(st.integers(2, min(3, len(nodes_tree))))
        picked = sorted(draw(st.permutations(range(len(nodes_tree))))[:k], reverse=True)
        group = tuple(nodes_tree.pop(i) for i in picked)
        nodes_tree.append(group)
    topology = Topology(nodes_tree[0])
    if n == 1:
        return Hierarchy.flat(names)
    times: dict[frozenset[str], float] = {}

    def assign(node, upper: float) -> None:
        if isinstance(node, str):
            return
        fraction = draw(st.floats(0.05, 0.95))
        t = upper * fraction
        times[frozenset(_leaves(node))] = t
        for child in node:
            assign(child, t)

    assign(topology.tree, 1.0)
    order = draw(st.permutations(names))
    return Hierarchy.from_topology(topology, times, classes=order)


def _leaves(node) -> list[str]:
    return [node] if isinstance(node, str) else [x for c in node for x in _leaves(c)]


# ---------------------------------------------------------------------- lookup
def test_branch_index_matches_path_lookup(pbmc_like: Hierarchy) -> None:
    rng = np.random.default_rng(0)
    class_idx = rng.integers(0, pbmc_like.n_classes, 2000)
    t = rng.uniform(-0.2, 1.2, 2000)
    boundaries = np.array([b.t_start for b in pbmc_like.branches] + [1.0])
    t[:200] = rng.choice(boundaries, 200)  # exact boundaries are the tricky part
    found = pbmc_like.branch_index(class_idx, t)
    expected = [path_lookup(pbmc_like, c, s) for c, s in zip(class_idx, t, strict=True)]
    np.testing.assert_array_equal(found, expected)


def test_every_class_time_pair_lies_in_exactly_one_branch(pbmc_like: Hierarchy) -> None:
    boundaries = sorted({b.t_start for b in pbmc_like.branches} | {1.0})
    times = np.unique(np.concatenate([np.linspace(0, 1, 101), boundaries]))
    for c in pbmc_like.classes:
        for t in times:
            holders = [
                i
                for i, b in enumerate(pbmc_like.branches)
                if c in b.classes and (b.t_start <= t < b.t_end or (t == 1.0 == b.t_end))
            ]
            assert len(holders) == 1, (c, t, holders)


def test_root_serves_t_one_and_later_and_leaf_serves_negative_times(
    pbmc_like: Hierarchy,
) -> None:
    idx = pbmc_like.class_index(["Mono", "Mono", "Mono"])
    found = pbmc_like.branch_index(idx, np.array([1.0, 3.0, -1.0]))
    assert list(found) == [pbmc_like.root, pbmc_like.root, pbmc_like.leaf("Mono")]


def test_branch_index_broadcasts_a_scalar_time(pbmc_like: Hierarchy) -> None:
    idx = np.arange(pbmc_like.n_classes)
    found = pbmc_like.branch_index(idx, 0.0)
    assert list(found) == [pbmc_like.leaf(c) for c in pbmc_like.classes]


def test_branch_index_rejects_bad_inputs(pbmc_like: Hierarchy) -> None:
    with pytest.raises(ValueError, match="class_idx"):
        pbmc_like.branch_index(np.array([99]), np.array([0.5]))
    with pytest.raises(ValueError, match="NaN"):
        pbmc_like.branch_index(np.array([0]), np.array([np.nan]))
    with pytest.raises(TypeError, match="integers"):
        pbmc_like.branch_index(np.array([0.5]), np.array([0.5]))


def test_paths_split_times_and_tree_links(pbmc_like: Hierarchy) -> None:
    h = pbmc_like
    assert h.n_classes == 5 and h.n_branches == 9 and h.root == 0
    path = h.path("CD8")
    assert path[0] == h.root and path[-1] == h.leaf("CD8")
    assert [h.branches[b].t_end for b in path[1:]] == [h.branches[b].t_start for b in path[:-1]]
    assert h.split_time(TREG, "CD8") == pytest.approx(0.2)
    assert h.split_time("CD8", "B") == pytest.approx(0.4)
    assert h.split_time("B", "Mono") == pytest.approx(0.6)
    assert h.split_time("DC", "DC") == 0.0
    assert h.common_branch("Mono", "DC") == h.parent(h.leaf("DC"))
    assert h.parent(h.root) is None
    assert set(h.children(h.root)) == {h.parent(h.leaf("B")), h.parent(h.leaf("DC"))}
    assert not h.is_flat


def _branch_of(h: Hierarchy, classes: set[str]) -> int:
    """The lowest branch holding exactly `classes`."""
    found = [b for b, branch in enumerate(h.branches) if set(branch.classes) == classes]
    return min(found, key=lambda b: h.branches[b].t_start)


def test_common_branch_of_one_two_and_three_classes(pbmc_like: Hierarchy) -> None:
    h = pbmc_like
    # one class (or one class repeated): its leaf
    assert h.common_branch("B") == h.leaf("B")
    assert h.common_branch(TREG) == h.leaf(TREG)
    assert h.common_branch("DC", "DC", "DC") == h.leaf("DC")
    # two classes: the branch where they split
    t_cells = _branch_of(h, {TREG, "CD8"})
    assert h.common_branch(TREG, "CD8") == t_cells == h.common_branch("CD8", TREG)
    assert h.branches[t_cells].t_start == pytest.approx(0.2)
    assert h.common_branch("B", "Mono") == h.root
    # three classes, in any order
    lymphoid = _branch_of(h, {TREG, "CD8", "B"})
    for order in [(TREG, "CD8", "B"), ("B", TREG, "CD8"), ("CD8", "B", TREG, "B")]:
        assert h.common_branch(*order) == lymphoid
    assert h.branches[lymphoid].t_start == pytest.approx(0.4)
    assert h.common_branch(TREG, "CD8", "Mono") == h.root
    assert h.common_branch("Mono", "DC", "Mono") == _branch_of(h, {"Mono", "DC"})
    # split_time is the start of the common branch of two classes
    assert h.split_time(TREG, "CD8") == h.branches[t_cells].t_start
    assert h.split_time("B", TREG) == h.branches[lymphoid].t_start
    assert h.split_time("B", "B") == 0.0


def test_common_branch_needs_known_classes_and_at_least_one() -> None:
    h = Hierarchy.from_newick("((a:0.5,b:0.5):0.25,c:0.75):0.25;")
    with pytest.raises(TypeError, match="at least one class"):
        h.common_branch()
    with pytest.raises(KeyError, match="'z'"):
        h.common_branch("a", "b", "z")
    flat = Hierarchy.flat(["a", "b", "c"])
    assert flat.common_branch("a") == flat.common_branch("a", "b", "c") == flat.root


def test_leaves_lists_classes_depth_first_left_to_right() -> None:
    assert leaves("a") == ["a"]
    assert leaves((("c", ("a", "d")), "b", ("e",))) == ["c", "a", "d", "b", "e"]
    assert Topology((("c", ("a", "d")), "b")).classes == ("c", "a", "d", "b")


def test_class_index_names_unknown_classes(pbmc_like: Hierarchy) -> None:
    assert list(pbmc_like.class_index(["B", TREG])) == [2, 0]
    with pytest.raises(KeyError, match="Platelet"):
        pbmc_like.class_index(["B", "Platelet"])


def test_flat_hierarchy_is_one_branch_over_the_unit_interval() -> None:
    h = Hierarchy.flat(["a", "b"])
    assert h.is_flat and h.n_branches == 1
    assert list(h.branch_index(np.array([0, 1]), np.array([0.0, 1.0]))) == [0, 0]
    assert h.split_time("a", "b") == 0.0
    single = Hierarchy.flat(["only"])
    assert single.leaf("only") == single.root == 0


def test_repr_shows_an_indented_tree_with_intervals(pbmc_like: Hierarchy) -> None:
    text = repr(pbmc_like)
    assert "[0.600, 1.000]" in text and "[0.000, 0.200) CD8" in text
    assert "    #" in text  # children are indented


# ---------------------------------------------------------------------- serialisation
def test_dict_round_trip_is_identity_through_json(pbmc_like: Hierarchy) -> None:
    d = json.loads(json.dumps(pbmc_like.to_dict()))
    assert Hierarchy.from_dict(d) == pbmc_like
    assert Hierarchy.from_dict(d).to_dict() == pbmc_like.to_dict()


def test_newick_round_trip_is_identity_and_quotes_special_names(pbmc_like: Hierarchy) -> None:
    text = pbmc_like.to_newick()
    assert f"'{TREG}'" in text
    assert text.endswith(":0.4;")  # the root's length is written
    back = Hierarchy.from_newick(text, classes=pbmc_like.classes)
    assert back == pbmc_like
    assert back.to_newick() == text


def test_newick_reader_accepts_comments_whitespace_and_escaped_quotes() -> None:
    text = "( 'it''s':0.5 [comment], (b:0.2,c_d:0.2):0.3 ) :0.5 ;"
    h = Hierarchy.from_newick(text)
    assert h.classes == ("it's", "b", "c_d")
    assert h.split_time("b", "c_d") == pytest.approx(0.2)


def test_newick_without_lengths_is_a_topology_not_a_hierarchy() -> None:
    with pytest.raises(ValueError, match="fit_split_times"):
        Hierarchy.from_newick("((a,b),c);")
    assert Topology.from_newick("((a,b),c);").clades() == {
        frozenset("ab"),
        frozenset("abc"),
    }


def test_newick_whose_leaves_miss_t_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        Hierarchy.from_newick("(a:0.3,b:0.5):0.5;")


def test_branch_order_is_canonical_whatever_the_input_order(pbmc_like: Hierarchy) -> None:
    d = pbmc_like.to_dict()
    d["branches"] = d["branches"][::-1]
    assert Hierarchy.from_dict(d) == pbmc_like


# ---------------------------------------------------------------------- validation
def _classes_and_branches() -> tuple[list[str], list[Branch]]:
    return ["a", "b", "c"], [
        Branch(("a", "b", "c"), 0.5, 1.0),
        Branch(("a", "b"), 0.2, 0.5),
        Branch(("a",), 0.0, 0.2),
        Branch(("b",), 0.0, 0.2),
        Branch(("c",), 0.0, 0.5),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda bs: bs.__setitem__(1, Branch(("a", "b"), 0.2, 0.45)), "gap"),
        (lambda bs: bs.__setitem__(1, Branch(("a", "b"), 0.2, 0.55)), "overlap"),
        (lambda bs: bs.__setitem__(4, Branch(("c",), 0.1, 0.5)), "t = 0"),
        (lambda bs: bs.__setitem__(0, Branch(("a", "b", "c"), 0.5, 0.9)), "t = 1"),
        (lambda bs: bs.__setitem__(1, Branch(("a", "c"), 0.2, 0.5)), "exactly one branch|nest"),
        (lambda bs: bs.__setitem__(2, Branch(("a", "z"), 0.0, 0.2)), "not in `classes`"),
        (lambda bs: bs.__setitem__(2, Branch(("a",), 0.2, 0.2)), "0 <= t_start < t_end"),
        (lambda bs: bs.append(Branch(("a",), 0.0, 0.2)), "exactly one branch|overlap"),
        (lambda bs: bs.pop(3), "t = 0"),
    ],
)
def test_invalid_branches_raise_clear_value_errors(change, message: str) -> None:
    classes, branches = _classes_and_branches()
    Hierarchy(classes, branches)  # the unchanged tree is valid
    change(branches)
    with pytest.raises(ValueError, match=message):
        Hierarchy(classes, branches)


def test_two_roots_and_shared_leaves_are_refused() -> None:
    with pytest.raises(ValueError, match="single root"):
        Hierarchy(["a", "b"], [Branch(("a",), 0.0, 1.0), Branch(("b",), 0.0, 1.0)])


def test_children_must_split_before_their_parent() -> None:
    topology = Topology((("a", "b"), "c"))
    with pytest.raises(ValueError, match="before"):
        Hierarchy.from_topology(
            topology, {frozenset("abc"): 0.3, frozenset("ab"): 0.5}
        )


# ---------------------------------------------------------------------- topologies
def test_topology_from_annotation_follows_coarse_to_fine_columns() -> None:
    obs = pd.DataFrame(
        {
            "lineage": ["lymphoid"] * 4 + ["myeloid", "progenitor"],
            "subpop": ["T cell", "T cell", "B cell", "NK", "CD14+", "CD34+"],
            "celltype": ["CD4", "CD8", "B", "NK", "Mono", "CD34"],
        }
    )
    topology = Hierarchy.from_annotation(obs, ["lineage", "subpop", "celltype"])
    assert topology.clades() == {
        frozenset(["CD4", "CD8"]),
        frozenset(["CD4", "CD8", "B", "NK"]),
        frozenset(obs["celltype"]),
    }


def test_topology_from_annotation_names_a_class_in_two_groups() -> None:
    obs = pd.DataFrame({"coarse": ["x", "y", "y"], "fine": ["a", "a", "b"]})
    with pytest.raises(ValueError, match="'a'.*several groups"):
        Topology.from_annotation(obs, ["coarse", "fine"])
    with pytest.raises(KeyError, match="nope"):
        Topology.from_annotation(obs, ["nope", "fine"])


def test_topology_from_nested_collapses_single_child_groups() -> None:
    nested = {"lymphoid": {"T": ["CD4", "CD8"], "B": None}, "myeloid": {"mono": ["CD14"]}}
    topology = Hierarchy.from_nested(nested)
    assert topology == Topology(((("CD4", "CD8"), "B"), "CD14"))
    assert Topology.from_newick(topology.to_newick()) == topology
    with pytest.raises(ValueError, match="once"):
        Topology((("a", "b"), "a"))


# ---------------------------------------------------------------------- hierarchy specs
SPEC_CLASSES = ("B", "CD4", "CD8", "Mono")


@pytest.fixture
def spec_obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lineage": ["lymphoid", "lymphoid", "lymphoid", "myeloid"],
            "subpop": ["B cell", "T cell", "T cell", "Mono"],
            "cell_type": ["B", "CD4", "CD8", "Mono"],
        }
    )


def test_parse_hierarchy_spec_returns_auto_and_flat_as_they_are() -> None:
    assert parse_hierarchy_spec("auto", SPEC_CLASSES) == "auto"
    assert parse_hierarchy_spec("flat", SPEC_CLASSES) == "flat"
    assert LABEL_GUIDED == "flat"
    assert is_label_guided("flat") and is_label_guided(LABEL_GUIDED)
    assert not is_label_guided("auto")
    assert not is_label_guided(Hierarchy.flat(SPEC_CLASSES))
    assert not is_label_guided(["flat"])


def test_parse_hierarchy_spec_checks_a_hierarchy_holds_every_class() -> None:
    given = Hierarchy.from_newick("(((CD4:0.2,CD8:0.2):0.2,B:0.4):0.2,Mono:0.6):0.4;")
    assert parse_hierarchy_spec(given, SPEC_CLASSES) is given
    # extra classes in the hierarchy are fine (e.g. types the data lacks)
    assert parse_hierarchy_spec(given, ["CD4", "Mono"]) is given
    with pytest.raises(
        ValueError,
        match=r"Cell types in adata.obs\['cell_type'\] are missing from the given "
        r"hierarchy: \['NK'\] \(hierarchy classes: ",
    ):
        parse_hierarchy_spec(given, [*SPEC_CLASSES, "NK"], labels_key="cell_type")


def test_parse_hierarchy_spec_reads_newick_with_and_without_lengths() -> None:
    topology = parse_hierarchy_spec("(((CD4,CD8),B),Mono);", SPEC_CLASSES)
    assert type(topology) is Topology
    assert topology == Topology(((("CD4", "CD8"), "B"), "Mono"))
    tree = parse_hierarchy_spec("(((CD4:0.2,CD8:0.2):0.2,B:0.4):0.2,Mono:0.6):0.4;", SPEC_CLASSES)
    assert type(tree) is Hierarchy
    assert tree.classes == SPEC_CLASSES  # the given order, not the Newick leaf order
    assert tree.split_time("CD4", "CD8") == pytest.approx(0.2)
    assert tree.split_time("B", "Mono") == pytest.approx(0.6)
    with pytest.raises(ValueError, match="Invalid Newick"):
        parse_hierarchy_spec("((CD4,CD8),B", SPEC_CLASSES)
    with pytest.raises(ValueError, match="must sum to 1"):
        parse_hierarchy_spec("((CD4:0.2,CD8:0.2):0.2,(B:0.4,Mono:0.4):0.2):0.5;", SPEC_CLASSES)


def test_parse_hierarchy_spec_reads_nested_mappings_and_annotation_columns(
    spec_obs: pd.DataFrame,
) -> None:
    expected = Topology(((("CD4", "CD8"), "B"), "Mono"))
    nested = {"lymphoid": {"T": ["CD4", "CD8"], "B": None}, "Mono": None}
    assert parse_hierarchy_spec(nested, SPEC_CLASSES) == expected
    columns = ["lineage", "subpop", "cell_type"]
    for spec in (columns, tuple(columns)):
        parsed = parse_hierarchy_spec(spec, SPEC_CLASSES, spec_obs, labels_key="cell_type")
        assert type(parsed) is Topology and parsed == expected
    # without labels_key the last column is not checked against it
    parsed = parse_hierarchy_spec(["lineage", "cell_type"], SPEC_CLASSES, spec_obs)
    assert parsed == Topology((("B", "CD4", "CD8"), "Mono"))


def test_parse_hierarchy_spec_errors_name_the_problem(spec_obs: pd.DataFrame) -> None:
    obs_key = {"obs": spec_obs, "labels_key": "cell_type"}
    with pytest.raises(KeyError, match=r"`hierarchy` columns \['nope'\] are not in adata.obs."):
        parse_hierarchy_spec(["lineage", "nope", "cell_type"], SPEC_CLASSES, **obs_key)
    with pytest.raises(
        ValueError,
        match=r"The last \(finest\) `hierarchy` column must be the labels key 'cell_type', "
        r"got 'subpop'.",
    ):
        parse_hierarchy_spec(["lineage", "subpop"], SPEC_CLASSES, **obs_key)
    with pytest.raises(ValueError, match="needs `obs`"):
        parse_hierarchy_spec(["lineage", "cell_type"], SPEC_CLASSES, labels_key="cell_type")
    stray = pd.DataFrame({"lineage": ["myeloid"], "subpop": ["Mono"], "cell_type": ["CD4"]})
    with pytest.raises(ValueError, match="'CD4' of column 'cell_type' sits in several groups"):
        parse_hierarchy_spec(
            ["lineage", "subpop", "cell_type"], SPEC_CLASSES, pd.concat([spec_obs, stray])
        )
    mismatch = (
        r"The hierarchy's classes \['B', 'CD4', 'CD8'\] differ from the cell types in "
        r"adata.obs\['cell_type'\]: \['B', 'CD4', 'CD8', 'Mono'\]."
    )
    for spec in ("((CD4,CD8),B);", {"T": ["CD4", "CD8"], "B": None}):
        with pytest.raises(ValueError, match=mismatch):
            parse_hierarchy_spec(spec, SPEC_CLASSES, **obs_key)
    with pytest.raises(ValueError, match=r"differ from the cell types in `classes`"):
        parse_hierarchy_spec("((CD4,CD8),B);", SPEC_CLASSES)
    with pytest.raises(ValueError, match=r"\['B', 'CD4', 'CD8', 'Mono', 'NK'\]"):
        parse_hierarchy_spec(
            ["lineage", "subpop", "cell_type"], [*SPEC_CLASSES, "NK"], **obs_key
        )
    unknown_kind = (
        r"`hierarchy` must be 'auto', 'flat', a list of obs columns, a nested dict, a Newick "
        r"string or a Hierarchy, got {}\."
    )
    # a Topology object is refused as it is by BranchedDiffusion today
    for spec, name in [
        (42, "int"),
        (None, "NoneType"),
        ([["CD4", "CD8"], "B", "Mono"], "list"),
        (Topology((("CD4", "CD8"), "B", "Mono")), "Topology"),
    ]:
        with pytest.raises(TypeError, match=unknown_kind.format(name)):
            parse_hierarchy_spec(spec, SPEC_CLASSES, **obs_key)


# ---------------------------------------------------------------------- continual learning
def test_map_branches_keeps_old_branches_when_a_class_is_added() -> None:
    old = Hierarchy.from_newick("((a:0.3,b:0.3):0.2,c:0.5):0.5;")
    # d joins a at 0.1, inside a's old leaf; the old tree is otherwise unchanged.
    new = Hierarchy.from_newick(
        "(((a:0.1,d:0.1):0.2,b:0.3):0.2,c:0.5):0.5;", classes=["a", "b", "c", "d"]
    )
    mapping = Hierarchy.map_branches(old, new)
    for j, i in mapping.items():
        kept = set(new.branches[j].classes) - {"d"}
        assert kept == set(old.branches[i].classes)
    # Every branch of the new tree maps except d's own leaf.
    assert set(range(new.n_branches)) - set(mapping) == {new.leaf("d")}
    assert mapping[new.root] == old.root
    assert mapping[new.leaf("a")] == old.leaf("a")
    assert mapping[new.parent(new.leaf("a"))] == old.leaf("a")


def test_map_branches_leaves_moved_splits_unmapped() -> None:
    old = Hierarchy.from_newick("(a:0.5,b:0.5):0.5;")
    new = Hierarchy.from_newick("(a:0.7,b:0.7):0.3;")
    # The new root lies inside the old one; the new leaves cross the old split at t = 0.5.
    assert Hierarchy.map_branches(old, new) == {new.root: old.root}


# ---------------------------------------------------------------------- properties
@settings(max_examples=50, deadline=None)
@given(hierarchies(), st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=30))
def test_random_hierarchies_keep_their_invariants(h: Hierarchy, times: list[float]) -> None:
    # Serialisation round trips are the identity.
    assert Hierarchy.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    assert Hierarchy.from_newick(h.to_newick(), classes=h.classes) == h
    # Intervals nest: each child ends where its parent starts and holds a subset of it.
    for b, branch in enumerate(h.branches):
        parent = h.parent(b)
        if parent is None:
            assert branch.t_end == 1.0 and set(branch.classes) == set(h.classes)
        else:
            assert branch.t_end == h.branches[parent].t_start
            assert set(branch.classes) <= set(h.branches[parent].classes)
    # Every (class, t) lies in exactly one branch, and the fast lookup finds it.
    boundaries = [b.t_start for b in h.branches]
    grid = np.array(times + boundaries + [1.0])
    for c in range(h.n_classes):
        found = h.branch_index(np.full(len(grid), c), grid)
        for t, b in zip(grid, found, strict=True):
            clamped = min(max(t, 0.0), 1.0)
            holders = [
                i
                for i, br in enumerate(h.branches)
                if h.classes[c] in br.classes
                and (br.t_start <= clamped < br.t_end or (clamped == 1.0 == br.t_end))
            ]
            assert holders == [b]


@settings(max_examples=50, deadline=None)
@given(hierarchies(), st.data())
def test_common_branch_is_the_lowest_branch_holding_every_class(
    h: Hierarchy, data: st.DataObject
) -> None:
    picked = data.draw(st.lists(st.sampled_from(h.classes), min_size=1, max_size=4))
    common = h.common_branch(*picked)
    assert set(picked) <= set(h.branches[common].classes)
    assert all(not set(picked) <= set(h.branches[k].classes) for k in h.children(common))
    if len(set(picked)) == 1:
        assert common == h.leaf(picked[0])
    # the two-class definition: the last branch both root-to-leaf paths share
    a, b = picked[0], picked[-1]
    shared = [x for x, y in zip(h.path(a), h.path(b), strict=False) if x == y]
    assert h.common_branch(a, b) == shared[-1]
    assert h.split_time(a, b) == h.branches[shared[-1]].t_start


def test_hierarchy_modules_import_nothing_that_needs_torch() -> None:
    # Static check of our own files: the package's top-level __init__ may import torch-based
    # subpackages, but the hierarchy code must not depend on them.
    package = Path(hierarchy_package.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                assert not name.startswith(("torch", "lightning", "scvi")), (source.name, name)
                assert not name.startswith(("scbranchdiff", "..")), (source.name, name)


# ---------------------------------------------------------------------- heights on two scales
SDE = VPSDE()


def test_log_snr_falls_from_infinity_and_time_at_log_snr_inverts_it() -> None:
    t = np.linspace(0.0, 1.0, 101)
    lam = log_snr(t, SDE)
    assert lam[0] == np.inf and np.all(np.diff(lam) < 0)
    # lambda = log(a^2 / s^2), from the SDE's own coefficients
    a, s = SDE.alpha(t[1:]), SDE.sigma(t[1:])
    np.testing.assert_allclose(lam[1:], np.log(a**2 / s**2), rtol=1e-12)
    np.testing.assert_allclose(time_at_log_snr(lam, SDE), t, atol=1e-12)
    assert isinstance(log_snr(0.5, SDE), float) and isinstance(time_at_log_snr(0.0, SDE), float)
    assert time_at_log_snr(log_snr(1.0, SDE), SDE) == 1.0
    with pytest.raises(ValueError, match="below lambda"):
        time_at_log_snr(log_snr(1.0, SDE) - 1.0, SDE)
    with pytest.raises(ValueError, match="NaN"):
        time_at_log_snr(np.nan, SDE)


def test_split_times_and_heights_list_each_splitting_group(pbmc_like: Hierarchy) -> None:
    times = pbmc_like.split_times()
    assert times == {
        frozenset(pbmc_like.classes): 0.6,
        frozenset([TREG, "CD8", "B"]): 0.4,
        frozenset([TREG, "CD8"]): 0.2,
        frozenset(["Mono", "DC"]): 0.3,
    }
    assert next(iter(times)) == frozenset(pbmc_like.classes)  # the root first
    assert Hierarchy.from_topology(pbmc_like.topology, times, pbmc_like.classes) == pbmc_like
    assert pbmc_like.split_heights(SDE, scale="t") == times
    heights = pbmc_like.split_heights(SDE)
    assert heights == {group: pytest.approx(log_snr(t, SDE)) for group, t in times.items()}
    # a group splits at a higher log-SNR (less noise) than the group above it
    assert heights[frozenset([TREG, "CD8"])] > heights[frozenset([TREG, "CD8", "B"])]
    assert Hierarchy.flat(["a", "b"]).split_times() == {}
    with pytest.raises(ValueError, match="needs the SDE"):
        pbmc_like.split_heights()
    with pytest.raises(ValueError, match="`scale` must be one of"):
        pbmc_like.split_heights(SDE, scale="snr")


def test_newick_with_log_snr_lengths_round_trips(pbmc_like: Hierarchy) -> None:
    text = pbmc_like.to_newick(scale="log_snr", sde=SDE)
    assert text != pbmc_like.to_newick()
    back = Hierarchy.from_newick(text, classes=pbmc_like.classes, scale="log_snr", sde=SDE)
    assert back == pbmc_like
    # lengths are drops of lambda: root from lambda(1), leaves down to lambda(t_min)
    tree = Hierarchy.from_newick("(a:0.4,b:0.4):0.6;")
    (a_len, _), root_len = _lengths(tree.to_newick(scale="log_snr", sde=SDE))
    assert root_len == pytest.approx(log_snr(0.4, SDE) - log_snr(1.0, SDE))
    assert a_len == pytest.approx(log_snr(SDE.t_min, SDE) - log_snr(0.4, SDE))
    # read as diffusion time, a log-SNR string is refused, with the way to read it
    with pytest.raises(ValueError, match="scale='log_snr'"):
        Hierarchy.from_newick(text)
    with pytest.raises(ValueError, match="not at lambda"):
        Hierarchy.from_newick(pbmc_like.to_newick(), scale="log_snr", sde=SDE)
    with pytest.raises(ValueError, match="needs the SDE"):
        pbmc_like.to_newick(scale="log_snr")
    with pytest.raises(ValueError, match="needs the SDE"):
        Hierarchy.from_newick(text, scale="log_snr")
    with pytest.raises(ValueError, match="`scale` must be one of"):
        pbmc_like.to_newick(scale="lambda", sde=SDE)
    # a split below t_min cannot be drawn down to lambda(t_min)
    with pytest.raises(ValueError, match="t_min"):
        Hierarchy.from_newick("(a:0.0005,b:0.0005):0.9995;").to_newick(scale="log_snr", sde=SDE)


def _lengths(newick: str) -> tuple[tuple[float, float], float]:
    """((leaf a, leaf b), root) lengths of a two-leaf Newick string."""
    inner, root = newick.rstrip(";").rsplit(":", 1)
    a, b = (float(part.split(":")[1]) for part in inner.strip("()").split(","))
    return (a, b), float(root)


def test_flat_hierarchy_round_trips_through_newick_and_is_a_star() -> None:
    flat = Hierarchy.flat(["a", "b c", "d"])
    assert flat.topology == Topology(("a", "b c", "d"))
    assert flat.to_newick() == "(a:0,'b c':0,d:0):1;"
    assert Hierarchy.from_newick(flat.to_newick()) == flat
    text = flat.to_newick(scale="log_snr", sde=SDE)
    assert Hierarchy.from_newick(text, scale="log_snr", sde=SDE) == flat


@settings(max_examples=40, deadline=None)
@given(hierarchies())
def test_random_hierarchies_round_trip_through_log_snr_newick(h: Hierarchy) -> None:
    sde = VPSDE(t_min=1e-6)
    lowest = min(b.t_end for b in h.branches if b.t_start == 0.0)
    if lowest <= sde.t_min:
        with pytest.raises(ValueError, match="t_min"):
            h.to_newick(scale="log_snr", sde=sde)
        return
    text = h.to_newick(scale="log_snr", sde=sde)
    assert Hierarchy.from_newick(text, classes=h.classes, scale="log_snr", sde=sde) == h


# ---------------------------------------------------------------------- agreement with a known tree
KNOWN = Topology.from_nested(
    {"lymphoid": {"T": ["CD4", "CD8", "Treg"], "B": None, "NK": None}, "Mono": None, "HSC": None}
)


def test_identical_trees_agree_fully_and_refinements_keep_every_triplet() -> None:
    scores = tree_agreement(KNOWN, KNOWN)
    assert scores == {
        "triplet_agreement": 1.0, "n_triplets": scores["n_triplets"], "robinson_foulds": 0,
        "robinson_foulds_normalised": 0.0, "clade_recall": 1.0, "clade_precision": 1.0,
        "n_classes": 7,
    }
    # resolved triplets: 3 T pairs x 4 outsiders + 5 lymphoid pairs (not both T) x 2 outsiders
    assert scores["n_triplets"] == 3 * 4 + (10 - 3) * 2
    # a binary tree that refines the known one agrees on every triplet; RF counts the
    # groups that resolve its multifurcations
    binary = "((((((CD4,CD8),Treg),B),NK),Mono),HSC);"
    scores = tree_agreement(binary, KNOWN)
    assert scores["triplet_agreement"] == 1.0 and scores["clade_recall"] == 1.0
    assert scores["robinson_foulds"] == 5 - 2
    assert scores["clade_precision"] == pytest.approx(2 / 5)


def test_a_misplaced_type_loses_the_triplets_it_breaks() -> None:
    # B inside the T group: B's triplets with two T cells and with the T cells vs NK break
    wrong = "((((CD4,B),CD8,Treg),NK),Mono,HSC);"
    scores = tree_agreement(wrong, KNOWN)
    assert 0.0 < scores["triplet_agreement"] < 1.0
    assert scores["clade_recall"] == 0.5  # lymphoid kept, T lost
    assert triplet_agreement(wrong, KNOWN) == scores["triplet_agreement"]
    assert robinson_foulds(wrong, KNOWN) == scores["robinson_foulds"]
    # RF is symmetric; the triplet agreement is not (it counts the known tree's triplets)
    assert robinson_foulds(KNOWN, wrong) == robinson_foulds(wrong, KNOWN)


def test_triplet_agreement_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(7)]
    for _ in range(20):
        trees = [Topology(_random_tree(list(rng.permutation(names)), rng)) for _ in range(2)]
        expected = _brute_triplets(*trees)
        assert triplet_agreement(*trees) == pytest.approx(expected)


def _random_tree(names: list, rng: np.random.Generator):
    while len(names) > 1:
        k = int(rng.integers(2, min(3, len(names)) + 1))
        group = tuple(names.pop(int(rng.integers(len(names)))) for _ in range(k))
        names.append(group)
    return names[0]


def _brute_triplets(found: Topology, known: Topology) -> float:
    def resolution(topology: Topology, a: str, b: str, c: str) -> frozenset | None:
        for x, y, z in ((a, b, c), (a, c, b), (b, c, a)):
            if any({x, y} <= clade and z not in clade for clade in topology.clades()):
                return frozenset([x, y])
        return None

    hits = total = 0
    for a, b, c in itertools.combinations(sorted(known.classes), 3):
        truth = resolution(known, a, b, c)
        if truth is not None:
            total += 1
            hits += resolution(found, a, b, c) == truth
    return hits / total


def test_tree_agreement_takes_every_tree_form_and_compares_on_chosen_classes(
    pbmc_like: Hierarchy,
) -> None:
    nested = {"lymphoid": {"T": [TREG, "CD8"], "B": None}, "myeloid": ["Mono", "DC"]}
    for known in (nested, pbmc_like.topology, pbmc_like.topology.to_newick(), pbmc_like):
        assert tree_agreement(pbmc_like, known)["robinson_foulds"] == 0
    # known trees placing only some classes: prune both to those
    partial = ((TREG, "CD8"), "Mono")
    scores = tree_agreement(pbmc_like, partial, classes=[TREG, "CD8", "Mono"])
    assert scores["n_classes"] == 3 and scores["triplet_agreement"] == 1.0
    with pytest.raises(ValueError, match="different classes"):
        tree_agreement(pbmc_like, partial)
    with pytest.raises(ValueError, match="not in both trees"):
        tree_agreement(pbmc_like, partial, classes=[TREG, "B"])
    with pytest.raises(TypeError, match="must be a Hierarchy"):
        tree_agreement(pbmc_like, 42)
    # a star resolves no triplet
    star = tree_agreement(pbmc_like, tuple(pbmc_like.classes))
    assert np.isnan(star["triplet_agreement"]) and star["n_triplets"] == 0
    assert np.isnan(star["clade_recall"])


# ---------------------------------------------------------------------- edited Newick to a model
def test_exported_newick_parses_back_in_the_model_class_order(pbmc_like: Hierarchy) -> None:
    model_order = sorted(pbmc_like.classes)
    parsed = parse_hierarchy_spec(pbmc_like.to_newick(), model_order)
    assert isinstance(parsed, Hierarchy) and parsed.classes == tuple(model_order)
    assert parsed == Hierarchy(model_order, pbmc_like.branches)
    assert parsed.split_times() == pytest.approx(pbmc_like.split_times())
    # edit a split time by hand: move (TREG, CD8) from t = 0.2 to t = 0.1
    text = pbmc_like.to_newick()
    edited = text.replace(f"'{TREG}':0.2,CD8:0.2):0.2", f"'{TREG}':0.1,CD8:0.1):0.3")
    assert edited != text
    assert parse_hierarchy_spec(edited, model_order).split_time(TREG, "CD8") == pytest.approx(0.1)


def test_a_model_trains_saves_and_loads_with_an_exported_newick_string(tmp_path) -> None:
    pytest.importorskip("torch")
    import warnings

    import scbranchdiff as sbd
    from scbranchdiff.model import BranchedDiffusion

    adata = sbd.data.pbmc68k()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels")
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
    first = BranchedDiffusion(adata, latent="X_pca", n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first.train(max_epochs=1, **quiet)
        text = first.hierarchy.to_newick()
        second = BranchedDiffusion(adata, latent="X_pca", hierarchy=text, n_hidden=16)
        second.train(max_epochs=1, **quiet)
        assert second.hierarchy == first.hierarchy
        assert second.hierarchy.classes == second.classes
        second.save(tmp_path / "model")
        loaded = BranchedDiffusion.load(tmp_path / "model", adata)
    assert loaded.hierarchy == second.hierarchy
    assert loaded.hierarchy == Hierarchy.from_newick(text, classes=loaded.classes)
