"""Self-configuration: fingerprint -> plan (target spacing, patch within budget, anisotropic strides, overrides)."""

from medseg.engine.plan import make_plan

FP = {
    "median_spacing": [0.8, 0.8, 5.0],
    "median_shape": [512, 512, 60],
    "channels": 1,
    "foreground": {"p00_5": -50.0, "p99_5": 250.0, "mean": 90.0, "std": 40.0},
}


def test_plan_thick_slices():
    p = make_plan(
        FP,
        spatial_dims=3,
        modality="CT",
        levels=5,
        overrides={"max_patch_voxels": 128 * 128 * 32, "configuration": "3d"},
    )
    assert p["configuration"] == "3d" and "requested" in p["configuration_reason"]
    assert p["target_spacing"] == [0.8, 0.8, 5.0]
    px, py, pz = p["patch_size"]
    assert px * py * pz <= 128 * 128 * 32 * 1.5
    assert [s[2] for s in p["strides"]][:3] == [1, 1, 1]  # no z down-sampling while z is >2x coarser
    assert all(s[0] == 2 for s in p["strides"][1:])
    for size, div in zip(p["patch_size"], p["divisor"]):
        assert size % div == 0
    assert p["norm"] == {"clip": [-50.0, 250.0], "mean": 90.0, "std": 40.0}


def test_plan_overrides_win():
    p = make_plan(
        FP,
        spatial_dims=3,
        modality="CT",
        levels=3,
        overrides={
            "target_spacing": [2.0, 2.0, 5.0],
            "patch_size": [64, 64, 16],
            "clip": [-100, 200],
            "norm_mean": None,
            "configuration": "3d",
        },
    )
    assert p["target_spacing"] == [2.0, 2.0, 5.0] and p["patch_size"] == [64, 64, 16]
    assert p["norm"]["clip"] == [-100, 200] and p["norm"]["mean"] == 90.0


def test_plan_mr_has_no_ct_norm():
    p = make_plan(
        {**FP, "median_spacing": [1.0, 1.0, 1.0], "median_shape": [160, 192, 160]},
        spatial_dims=3,
        modality="MR",
        levels=4,
    )
    assert p["norm"]["nonzero_mask"] is False  # cropping to the non-zero region shrank nothing
    assert all(s == [2, 2, 2] for s in p["configurations"]["3d"]["strides"][1:])
