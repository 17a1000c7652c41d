"""Bit-identity snapshot: generated latents and counts for fixed seeds, to compare two versions.

Trains small branched and flat models (PCA latent on simulated data, scVI latent on pbmc68k)
and records their weights and the outputs of generate (plain, chunked, ODE), transmute (ODE
and SDE), sample_intermediates and add_cell_types for fixed seeds. Run it on two checkouts and
compare: ``python benchmarks/snapshot.py before.npz`` (old code), then ``... after.npz`` (new),
then ``python benchmarks/snapshot.py --compare before.npz after.npz``. It uses one thread and
fixes scVI's global seed so that CPU float reductions and scVI's split are deterministic (with
two threads repeated runs differ in the last bits). Only the public API is used.
"""
import hashlib
import sys
import warnings

import numpy as np
import scipy.sparse as sp


def compare(before: str, after: str) -> int:
    """Print which arrays differ between two snapshots; exit status 1 if any."""
    a, b = np.load(before, allow_pickle=True), np.load(after, allow_pickle=True)
    bad = [k for k in sorted(set(a.files) | set(b.files))
           if k not in a.files or k not in b.files or a[k].shape != b[k].shape
           or not np.array_equal(a[k], b[k])]
    print(f"{len(a.files)} vs {len(b.files)} arrays; {len(bad)} differ")
    for k in bad:
        print("  ", k)
    return 1 if bad else 0


def snapshot(path: str) -> None:
    import scanpy as sc
    import scvi
    import torch

    import scbranchdiff as sbd

    torch.set_num_threads(1)
    scvi.settings.seed = 0  # older versions split scVI's cells with this global seed
    warnings.simplefilter("ignore")
    FAST = {"enable_progress_bar": False, "enable_model_summary": False}
    out = {}

    def dense(x):
        return x.toarray() if sp.issparse(x) else np.asarray(x)

    def record(name, a):
        out[name + ".latent"] = np.asarray(a.obsm["X_latent"])
        if a.n_vars:
            out[name + ".X"] = dense(a.X)
            for k in a.layers:
                out[name + "." + k] = dense(a.layers[k])
        for c in a.obs.columns:
            v = a.obs[c]
            if v.dtype.kind in "fiub":
                out[name + ".obs." + c] = v.to_numpy()
            else:
                out[name + ".obs." + c] = v.astype(str).to_numpy()
        out[name + ".names"] = np.asarray(a.obs_names.astype(str))
        if "X_state" in a.obsm:
            out[name + ".state"] = np.asarray(a.obsm["X_state"])

    def weights(name, model):
        for k, v in model.module.state_dict().items():
            out[f"{name}.w.{k}"] = v.detach().cpu().numpy()

    # ---- simulated, PCA latent
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=60, n_genes=300, seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    is_new = (adata.obs["cell_type"] == "T_CD8").to_numpy()
    old = adata[~is_new].copy()
    old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
    for kind in ("branched", "flat"):
        a = old.copy()
        sbd.model.BranchedDiffusion.setup_anndata(a, labels_key="cell_type")
        m = sbd.model.BranchedDiffusion(a, latent="pca", n_hidden=32, hierarchy="auto" if kind == "branched" else "flat")
        m.train(max_epochs=15, **FAST)
        weights(f"pca_{kind}", m)
        record(f"pca_{kind}.gen_sde", m.generate(7, seed=3, n_steps=30))
        record(f"pca_{kind}.gen_ode", m.generate({m.classes[0]: 5, m.classes[-1]: 4}, sampler="ode", n_steps=20, seed=1))
        record(f"pca_{kind}.gen_chunks", m.generate(9, seed=5, n_steps=20, batch_size=4))
        src = a[a.obs["cell_type"] == m.classes[0]]
        tgt = m.classes[-1]
        t = 0.6 if kind == "flat" else None
        record(f"pca_{kind}.trans_ode", m.transmute(src, target=tgt, t=t, n_steps=30))
        record(f"pca_{kind}.trans_sde", m.transmute(a, target=tgt, t=t, method="sde", n_steps=30, seed=2, batch_size=50))
        if kind == "branched":
            record("pca_branched.inter", m.sample_intermediates(list(m.classes[:3]), n_cells=6, n_steps=40, seed=4))
            record("pca_branched.inter_ode", m.sample_intermediates(list(m.classes[-2:]), n_cells=5, sampler="ode", n_steps=20, seed=4))
            m.add_cell_types(adata[is_new].copy(), max_epochs=5, **FAST)
            weights("pca_branched_added", m)
            record("pca_branched.after_add", m.generate(7, seed=3, n_steps=30))
            record("pca_branched.after_add_trans", m.transmute(src, target="T_CD8", n_steps=30))

    # ---- pbmc68k, scVI latent
    a = sbd.data.pbmc68k()
    sbd.model.BranchedDiffusion.setup_anndata(a, labels_key="bulk_labels", layer="counts")
    m = sbd.model.BranchedDiffusion(a, n_hidden=32)
    m.train(max_epochs=4, latent_max_epochs=3, **FAST)
    weights("scvi", m)
    out["scvi.z"] = m.get_latent_representation()
    record("scvi.gen", m.generate(6, seed=0, n_steps=25))
    record("scvi.trans", m.transmute(a[:40], target="CD19+ B", n_steps=25))
    record("scvi.inter", m.sample_intermediates(["CD14+ Monocyte", "Dendritic"], n_cells=5, n_steps=25, seed=1))

    np.savez(path, **out)
    h = hashlib.sha256()
    for k in sorted(out):
        h.update(k.encode())
        value = out[k]
        h.update(np.ascontiguousarray(value).tobytes() if value.dtype != object
                 else str(value.tolist()).encode())
    print(len(out), "arrays, sha256", h.hexdigest())


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    snapshot(sys.argv[1])
