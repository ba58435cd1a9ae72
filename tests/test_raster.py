"""Pixel-exactness of the numpy rasterizer.

Every expected mask below was produced by OpenCV 5.0
(``cv2.drawContours(zeros, [pts.astype(np.int32)], -1, 1, thickness=-1)``) while
developing and pinned here, so the suite itself needs no OpenCV.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import label_map, rasterize, rasterize_organs, scale_points, truncate_points
from chexmask_u_tools.io.rle import rle_decode

# name: (vertices, height, width, expected rows; '#' = in mask)
CASES = {
    "tiny_triangle": (
        [(1, 1), (4, 1), (1, 3)], 5, 6,
        "......"
        ".####."
        ".###.."
        ".#...."
        "......"
    ),
    "rectangle_horizontal_vertical_edges": (
        [(1, 1), (5, 1), (5, 3), (1, 3)], 5, 7,
        "......."
        ".#####."
        ".#####."
        ".#####."
        "......."
    ),
    "shallow_triangle": (
        [(0, 0), (9, 2), (3, 5)], 7, 10,
        "###......."
        ".######..."
        ".#########"
        "..#######."
        "..#####..."
        "...##....."
        ".........."
    ),
    "vertices_off_image": (
        [(-3, 2), (5, -2), (6, 7)], 6, 6,
        ".#####"
        "######"
        "######"
        "######"
        ".#####"
        "...###"
    ),
    "left_exit": (
        [(-5, 1), (4, 2), (3, 6)], 7, 6,
        "......"
        "###..."
        "#####."
        "#####."
        "####.."
        ".###.."
        "...#.."
    ),
    "repeated_vertices": (
        [(1, 1), (1, 1), (4, 2), (4, 2), (2, 4)], 6, 6,
        "......"
        ".##..."
        ".####."
        "..##.."
        "..#..."
        "......"
    ),
    "self_intersecting_bow_tie": (
        [(0, 0), (6, 4), (6, 0), (0, 4)], 5, 7,
        "#.....#"
        "###.###"
        "#######"
        "###.###"
        "#.....#"
    ),
    "degenerate_segment": (
        [(0, 0), (5, 3)], 4, 6,
        "#....."
        ".##..."
        "...##."
        ".....#"
    ),
    "degenerate_point": (
        [(2, 3)], 5, 5,
        "....."
        "....."
        "....."
        "..#.."
        "....."
    ),
    "truncation_toward_zero": (
        [(-0.7, -0.7), (4.9, 0.2), (2.5, 4.99)], 6, 6,
        "#####."
        "####.."
        ".###.."
        ".##..."
        "..#..."
        "......"
    ),
    "far_outside_covering": (
        [(-1000, -1000), (1000, -1000), (0, 1000)], 5, 7,
        "#######"
        "#######"
        "#######"
        "#######"
        "#######"
    ),
    "concave_u": (
        [(0, 0), (2, 0), (2, 3), (4, 3), (4, 0), (6, 0), (6, 5), (0, 5)], 6, 7,
        "###.###"
        "###.###"
        "###.###"
        "#######"
        "#######"
        "#######"
    ),
    "star_several_runs_per_row": (
        [(4, 0), (5, 3), (8, 3), (6, 5), (7, 8), (4, 6), (1, 8), (2, 5), (0, 3), (3, 3)], 9, 9,
        "....#...."
        "....#...."
        "...###..."
        "#########"
        ".#######."
        "..#####.."
        "..#####.."
        ".###.###."
        ".#.....#."
    ),
    "touching_border": (
        [(0, 0), (5, 0), (5, 4), (0, 4)], 5, 6,
        "######"
        "######"
        "######"
        "######"
        "######"
    ),
}


def _expected(rows: str, height: int, width: int) -> np.ndarray:
    return (np.frombuffer(rows.encode(), dtype=np.uint8) == ord("#")).reshape(height, width)


@pytest.mark.parametrize("method", ["kernel", "numpy"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_made_polygons(name, method):
    pts, h, w, rows = CASES[name]
    got = rasterize(np.array(pts, dtype=float), h, w, method=method)
    assert got.dtype == bool and got.shape == (h, w)
    np.testing.assert_array_equal(got, _expected(rows, h, w))


def test_cases_are_not_trivially_full_or_empty():
    # the pinned set exercises both filled and empty pixels in almost every case
    mixed = [n for n, (p, h, w, rows) in CASES.items() if "#" in rows and "." in rows]
    assert len(mixed) >= len(CASES) - 2


def _lcg_polygons(count: int, seed: int = 12345):
    """Deterministic pseudo-random polygons (own LCG: independent of numpy's RNG streams)."""
    state = seed

    def nxt(mod: int) -> int:
        nonlocal state
        state = (1664525 * state + 1013904223) % 2**32
        return (state >> 8) % mod

    out = []
    for i in range(count):
        h, w, n = 1 + nxt(48), 1 + nxt(48), 1 + nxt(9)
        spread = (max(h, w) + 8, 120, 3000)[i % 3]
        pts = [
            ((nxt(20 * spread) - 10 * spread) / 10.0 + w / 2, (nxt(20 * spread) - 10 * spread) / 10.0 + h / 2)
            for _ in range(n)
        ]
        out.append((np.array(pts), h, w))
    return out


def _digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()[:12]


EXPECTED_DIGESTS = (
    "0b7d4cc19625", "ceac2c1eb137", "454b6d3ea248", "2fe6f053832c", "9ee06c950259", "d24e8dee4cb3",
    "485ce34817eb", "9ee1c1b2561c", "b433aeb9afdd", "4a38a83efc23", "0206a135338d", "7a4ac15b574a",
    "1c0856d35d86", "780143a6f9e6", "809c35532d46", "513a09c18830", "8a6e4118cd53", "cf77b51e4515",
    "f02e0d32dec7", "7e44cc964335", "d5d9639b9aa6", "81ffcedef325", "acb1fd5886e8", "a9c73c6f3f14",
    "76584b0c34a9", "d12ce44b303b", "5808403a8e47", "a3ecc1ca43a1", "9837941bfac3", "e7c5648158cd",
    "305176d6faaa", "7c65c832e617", "a0d1c820e5bc", "c2ffb61589db", "47cf1d4bdeb5", "6ce4ff4c53d0",
    "2af85a7fda04", "1f499168eab3", "b087261ffed8", "769f8db0cb4c", "470a5e7a6694", "d4f913d1ea16",
    "6eaf7b4e02d5", "dc433f603ffd", "0f03c266b63c", "fbda60978d5e", "a0115cfa8346", "28ee42d93ac5",
    "c7df1fcf8fe9", "55bddc540bcb", "4623ac3bdb42", "60e1b29499b6", "bb8e9d71583e", "4aef43664ba8",
    "4ee8f595a12c", "df9dd163f005", "c97080d6fd05", "6de1df01337c", "236adc7983ee", "2edd285617af",
    "dca4a71a238c", "f5e9eb846b2f", "fd911859d9b7", "bda1a02e3a7c", "b6aaa9bf5bf5", "a5daa0d29fcb",
    "43c037b86ac6", "ba651377c934", "27b3b8d5eb7d", "9c1e05d4c748", "3a865e1d6d9e", "e23bca704ae7",
    "8b088806bdf5", "39e8d8c8d9b9", "d4dc631cd77a", "c3aa8b25624b", "a497ce3e9220", "a98e3d49b394",
    "961e6f1aa316", "12e3aadc8803", "68491bba5ed3", "0e18e658b516", "8fec007b3886", "407e18005eae",
    "b7eacf9c6de9", "cddd4cf831c4", "795168a21733", "8fd81b4bcd91", "8bafbde09466", "9ac430886af7",
    "8419fe733a81", "db88b378f89f", "b8f3086d8971", "27c5c95bad6b", "c249c297861d", "0095a419671f",
    "67687a54eb7a", "d37e673c8f2f", "9457382d2809", "77cfb8ffc7ea", "9e90e86d67a4", "6289f2f5e583",
    "a00d5d66416b", "685113eb0eb5", "973a7677c641", "711e8a6db1ac", "fe7bb71bd9bc", "2ef099f239d0",
    "dcd4c5a6631e", "9151f2f5319f", "84d39a42153e", "36393544ed74", "31df1ce0fcf1", "4a7631c45b67",
    "e3c50c044b9c", "4df86aa42cda", "0785c3184cbf", "b257948321b1", "ca781a4b741f", "9d85eccd47db",
    "ff0f790e9a53", "b5ea8fa2939a", "1386ff8a0649", "2b2ad7c580f6", "85fc66fa1e7d", "ec4836159ecd",
    "f131ac1c0d8e", "cdd67fff17e8", "ca8ed3296f1f", "98b8b9e51725", "1bdf98bb9417", "330d35682233",
    "f151196b1617", "6ce83f7f76f1", "3ce7fa5c9d1e", "00b9f47b9e52", "c72146832931", "c2f66af75114",
    "3e19358d5396", "81ec1c14da7f", "fde614f7c914", "95750150224f", "6e3cad0311e1", "3020ad3eaf85",
    "ab7fe6deecba", "7dcfbf27fd36", "1afe5d99114d", "492315db4e9a", "ed9a108daed0", "1a96f7eb8a8d",
    "5dc9552b6aa5", "1385588abbab", "a3960a59dbc6", "53c29e4b8861", "427587151e30", "16d61d2b7214",
    "96a6ec0c36af", "1081f894e0fd", "8e9d56aaa7a3", "dca4a71a238c", "a0270b6e5ae8", "2a1b392c3859",
    "6ff57127454b", "2f7c415d79d8", "642fab0a0923", "3091ff6d8098", "f50d5abb5204", "ed1991602b0f",
    "e47b57aecb4e", "78977bf5dc5b", "cf016d147b9e", "6baeb0ad3e36", "1303d31cf4e3", "be1aeddf0470",
    "0880b4aff4fd", "ac05112ac9e8", "8bdf39cc2afc", "a322798d2a9a", "c5e21d0f13ed", "dd1504d2f712",
    "527e5eb2d4ae", "832d2a3a9e8f", "a316f382ee10", "6d4274ac1544", "1bcf95415b16", "53fa4dd0e2c1",
    "e598a446b6fe", "84449068e338", "c75650a2a720", "6434e3d082cf", "ac1dfd0d453d", "771328799ad7",
    "6653098c5822", "412ad6822868", "6fd16f6d5116", "dded236c5b22", "dfef2bd914f9", "0e1cc7fa4723",
    "1aac81af59df", "a11f3baa9999", "46e654528372", "279a6ff29f88", "9c7cd33e64a9", "f3b2a0ea8638",
    "0d980dee292f", "2cf32f02ccc8", "0121999d656e", "dc3b4c70facc", "bf227aa48ada", "67938127bd2a",
    "36e772def459", "3ef2d9cdd2eb", "8bdf39cc2afc", "fc11b707a43e", "fabcb7f28d6b", "ced34810819b",
    "6c8f14c391d8", "31003c2b2d88", "0fbde3448b33", "4aeafbfc90de", "c90f03b5cb18", "3db371f38f67",
    "20cdefc81384", "d3c4400e1b1d", "780143a6f9e6", "04c071341cab", "9800ee42502d", "447e4b71b92a",
    "16b99ba38190", "7cdfbe6b9ab2", "0a68215b8a4c", "29b4f490a297", "eddcc72b01bf", "84c6779a31b7",
    "0c79fe8ce473", "10cc5dad413e", "c914877a2bed", "53cb515016d7", "fb04669505a7", "c258d28a884a",
)


@pytest.mark.parametrize("method", ["kernel", "numpy"])
def test_random_polygons_match_opencv_digests(method):
    polys = _lcg_polygons(len(EXPECTED_DIGESTS))
    got = [_digest(rasterize(p, h, w, method=method)) for p, h, w in polys]
    bad = [i for i, (g, e) in enumerate(zip(got, EXPECTED_DIGESTS)) if g != e]
    assert not bad, f"polygons {bad} differ from OpenCV"


@pytest.mark.parametrize("method", ["kernel", "numpy"])
def test_batch_and_ragged_equal_single(method):
    polys = _lcg_polygons(30, seed=7)
    same = [(p[:, :], 20, 30) for p, _, _ in polys]
    ragged = rasterize([p for p, _, _ in same], 20, 30, method=method)
    assert ragged.shape == (30, 20, 30)
    for i, (p, h, w) in enumerate(same):
        np.testing.assert_array_equal(ragged[i], rasterize(p, h, w, method=method))
    fixed = np.stack([np.resize(p, (5, 2)) for p, _, _ in same])
    batch = rasterize(fixed, 20, 30, method=method)
    for i in range(len(fixed)):
        np.testing.assert_array_equal(batch[i], rasterize(fixed[i], 20, 30, method=method))


def _real_rows(real_tables):
    """(file name, canonical row) of every real file, whatever its layout (sizes as read_table gives them)."""
    for path, table in real_tables:
        for row in table.iter_rows(named=True):
            yield path.name, row


@pytest.mark.parametrize("method", ["kernel", "numpy"])
def test_real_rows_reproduce_released_masks(real_tables, method):
    n_masks = n_rows = 0
    for name, row in _real_rows(real_tables):
        h, w = row["height"], row["width"]
        masks = rasterize_organs(np.asarray(row["landmarks"], dtype=np.float64), h, w, method=method)
        for k, column in enumerate(["rle_right_lung", "rle_left_lung", "rle_heart"]):
            released = rle_decode(row[column], h, w)
            diff = int(np.count_nonzero(masks[k] != released))
            assert diff == 0, f"{name} {row['image_id']}: {column} differs in {diff} pixels"
            n_masks += 1
        n_rows += 1
    assert n_rows > 0 and n_masks == 3 * n_rows


def test_rasterize_organs_batch_and_organ_order(real_tables):
    rows = [row for _, row in _real_rows(real_tables)]
    h, w = rows[0]["height"], rows[0]["width"]  # a batch shares one size
    lm = np.stack([np.asarray(row["landmarks"], dtype=np.float64) for row in rows if (row["height"], row["width"]) == (h, w)][:4])
    batch = rasterize_organs(lm, h, w)
    assert batch.shape == (len(lm), 3, h, w)
    for b in range(len(lm)):
        for k, organ in enumerate(ORGANS):
            np.testing.assert_array_equal(batch[b, k], rasterize(lm[b, ORGAN_SLICES[organ]], h, w))


def test_scaled_rasterization_and_from_size():
    rng = np.random.default_rng(3)
    lm = np.concatenate(
        [c + rng.normal(0, 1, (n, 2)) + 120 * np.c_[np.cos(a), np.sin(a)]
         for c, n in (((300, 500), 44), ((700, 500), 50), ((500, 600), 26))
         for a in [np.linspace(0, 2 * np.pi, n, endpoint=False)]]
    )
    small = rasterize_organs(lm, 256, 128, from_size=(1024, 1024))
    scaled = scale_points(lm, (1024, 1024), (256, 128))
    np.testing.assert_allclose(scaled, lm * [128 / 1024, 256 / 1024])
    assert small.shape == (3, 256, 128)
    np.testing.assert_array_equal(small[2], rasterize(scaled[94:], 256, 128))
    # drawn at the small size: the area scales with the canvas (1/32), a bit
    # more because the included boundary pixels weigh more on a small canvas
    big = rasterize_organs(lm, 1024, 1024)
    ratio = small.sum() / big.sum()
    assert 1 / 32 < ratio < 1.1 / 32


def test_label_map_precedence():
    sq = lambda x0, y0, x1, y1, n: np.array(  # noqa: E731 - a square ring with n nodes
        [(x0, y0)] + [(x1, y0)] + [(x1, y1)] + [(x0, y1)] + [(x0, y0 + (y1 - y0) * (i + 1) / (n - 3)) for i in range(n - 4)]
    )
    lm = np.concatenate([sq(0, 0, 10, 10, 44), sq(8, 0, 18, 10, 50), sq(5, 5, 15, 15, 26)])
    labels = label_map(lm, 20, 20)
    masks = rasterize_organs(lm, 20, 20)
    assert labels.dtype == np.uint8
    assert labels[7, 7] == 3 and masks[0, 7, 7] and masks[2, 7, 7]  # heart over right lung
    assert labels[2, 9] == 2 and masks[0, 2, 9] and masks[1, 2, 9]  # left lung over right lung
    assert labels[2, 2] == 1 and labels[19, 19] == 0
    np.testing.assert_array_equal(labels > 0, masks.any(axis=0))
    assert label_map(np.stack([lm, lm]), 20, 20).shape == (2, 20, 20)


def test_truncate_points():
    np.testing.assert_array_equal(truncate_points([[-0.7, 3.9], [-1.2, 0.0]]), [[0, 3], [-1, 0]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: rasterize(np.zeros((3, 3)), 10, 10),
        lambda: rasterize(np.zeros((0, 2)), 10, 10),
        lambda: rasterize(np.array([[1.0, np.nan], [2, 2], [3, 1]]), 10, 10),
        lambda: rasterize(np.array([[1.0, np.inf], [2, 2], [3, 1]]), 10, 10),
        lambda: rasterize(np.array([["a", "b"]]), 10, 10),
        lambda: rasterize(np.zeros((2, 2, 3, 2)), 10, 10),
        lambda: rasterize(np.zeros((3, 2)), 0, 10),
        lambda: rasterize(np.zeros((3, 2)), 10, -5),
        lambda: rasterize(np.zeros((3, 2)), 10.5, 10),
        lambda: rasterize(np.full((3, 2), 1e12), 10, 10),
        lambda: rasterize_organs(np.zeros((119, 2)), 10, 10),
        lambda: scale_points(np.zeros((3, 2)), (0, 10), (10, 10)),
    ],
)
def test_bad_input_raises_input_error(call):
    with pytest.raises(InputError):
        call()


def _three_rings(scale=1.0):
    """(120, 2) landmarks of three rings in a 1024 frame (times ``scale``)."""
    rings = []
    for (cx, cy), n in (((300, 500), 44), ((700, 500), 50), ((500, 600), 26)):
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rings.append(np.c_[cx + 120 * np.cos(a), cy + 120 * np.sin(a)])
    return np.concatenate(rings) * scale


def test_landmarks_of_another_frame_raise_instead_of_empty_masks():
    lm = _three_rings()  # every vertex beyond 256 px
    for call in (
        lambda **kw: rasterize_organs(lm, 256, 256, **kw),
        lambda **kw: label_map(lm, 256, 256, **kw),
        lambda **kw: rasterize_organs(np.stack([_three_rings(0.2), lm]), 256, 256, **kw)[1],
    ):
        with pytest.raises(InputError, match="from_size"):
            call()
        assert not call(allow_empty=True).any()  # explicitly asked for: empty
    # an organ partly in view is legitimate when asked for (allow_partial); by default it is refused
    partly = lm.copy()
    partly[0] = (10.0, 10.0)
    assert rasterize_organs(partly, 256, 256, allow_partial=True).shape == (3, 256, 256)
    with pytest.raises(InputError, match="allow_partial=True"):
        rasterize_organs(partly, 256, 256)
    assert rasterize_organs(lm, 256, 256, from_size=(1024, 1024)).any()


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_out_buffers_equal_fresh_results(dtype):
    rng = np.random.default_rng(8)
    lm = np.stack([_three_rings(0.1) + rng.normal(0, 2, (120, 2)) for _ in range(3)])
    fresh = rasterize_organs(lm, 100, 90)
    buffer = np.ones((3, 3, 100, 90), dtype=dtype)  # stale contents must not survive
    for _ in range(2):
        got = rasterize_organs(lm, 100, 90, out=buffer)
        assert got is buffer and got.dtype == dtype
        np.testing.assert_array_equal(got.astype(bool), fresh)
    one = np.full((3, 100, 90), 7, dtype=dtype)
    np.testing.assert_array_equal(rasterize_organs(lm[1], 100, 90, out=one).astype(bool), fresh[1])
    polys = [lm[0, :44], lm[1, :44]]
    batch = np.ones((2, 100, 90), dtype=dtype)
    np.testing.assert_array_equal(rasterize(polys, 100, 90, out=batch).astype(bool), rasterize(polys, 100, 90))
    single = np.ones((100, 90), dtype=dtype)
    np.testing.assert_array_equal(rasterize(lm[2, 94:], 100, 90, out=single).astype(bool), fresh[2, 2])
    assert set(np.unique(single)) <= {0, 1}


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((3, 100, 91), dtype=bool),  # wrong shape
        np.zeros((3, 100, 90), dtype=np.float32),  # wrong dtype
        np.zeros((3, 90, 100), dtype=bool).transpose(0, 2, 1),  # not C-contiguous
        [[0]],  # not an array
    ],
)
def test_bad_out_buffer_raises(out):
    with pytest.raises(InputError):
        rasterize_organs(_three_rings(0.1), 100, 90, out=out)


@pytest.mark.parametrize("draw", ["rasterize_organs", "label_map", "soft_mask_organs"])
def test_landmarks_of_another_frame_are_refused_not_cut(draw):
    row = cxu.load_sample().row(0, named=True)
    landmarks, std = np.asarray(row["landmarks"]), np.asarray(row["landmarks_std"])

    def call(**keywords):
        if draw == "soft_mask_organs":
            return cxu.soft_mask_organs(landmarks, std, 512, 512, **keywords)
        return getattr(cxu, draw)(landmarks, 512, 512, **keywords)

    with pytest.raises(cxu.InputError, match=r"of 120 nodes .* beyond the 512x512 grid .* from_size=") as caught:
        call()  # 1024-frame landmarks at 512 without from_size: the left lung and half the heart would be cut
    assert "allow_partial=True" in str(caught.value)
    partial = call(allow_partial=True)
    assert partial.shape[-2:] == (512, 512)
    scaled = call(from_size=(1024, 1024))
    assert scaled.shape[-2:] == (512, 512)


def test_real_contours_that_cross_the_border_still_draw(real_tables):
    """Every real row in its own frame passes the check (some contours cross the border)."""
    for _, real in real_tables:
        for row in real.iter_rows(named=True):
            height, width = cxu.mask_shape(row["frame"], row["height"], row["width"])
            cxu.rasterize_organs(np.asarray(row["landmarks"]), height, width)


def test_sample_rows_that_cross_the_border_still_draw():
    sample = cxu.load_sample()
    for row in sample.iter_rows(named=True):
        height, width = cxu.mask_shape(row["frame"], row["height"], row["width"])
        masks = cxu.rasterize_organs(np.asarray(row["landmarks"]), height, width)
        for k, column in enumerate(("rle_right_lung", "rle_left_lung", "rle_heart")):
            assert (cxu.rle_decode(row[column], height, width) == masks[k]).all()
