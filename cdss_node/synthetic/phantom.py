"""A deterministic synthetic chest CT with one lung tumor of known mask (pure numpy, no DICOM).

The anatomy is described in millimetres, so every grid shows the same body; only the sampling
changes. Patient coordinates follow DICOM LPS with the body centred on the grid:

* axis 0 (slices): index 0 is the most cranial slice; ``z_mm`` decreases with the index;
* axis 1 (rows): ``y_mm`` increases towards the patient's back (posterior);
* axis 2 (columns): ``x_mm`` increases towards the patient's left, so the right lung, which
  holds the tumor, lies in the image's left half.

The vessel tree and the noise are drawn from ``np.random.default_rng(spec.seed)`` (tree first,
then noise), so a spec always gives the same arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ANATOMY_VERSION = 1  # bump when the anatomy changes: it feeds the UIDs of written series
HU_MIN, HU_MAX = -1024, 3071
HU_AIR, HU_FAT, HU_MUSCLE, HU_SOFT_TISSUE = -1000, -100, 45, 38
HU_MEDIASTINAL_FAT, HU_LIVER, HU_BLOOD, HU_LUNG, HU_VESSEL, HU_TUMOR = -80, 55, 40, -850, 35, 30
HU_GROUND_GLASS = -550
HU_CORTICAL_BONE, HU_CANCELLOUS_BONE, HU_RIB, HU_DISC, HU_CSF = 700, 300, 550, 80, 15

# In-plane ellipses: (centre x, centre y, semi-axis x, semi-axis y), mm.
BODY = (0.0, 0.0, 170.0, 120.0)
MUSCLE = (0.0, 0.0, 160.0, 112.0)
RIB_RING = (0.0, 0.0, 147.0, 106.0)
THORACIC_CAVITY = (0.0, 0.0, 138.0, 98.0)
MEDIASTINUM = (0.0, -10.0, 20.0, 95.0)
MEDIASTINAL_FAT = (5.0, -20.0, 40.0, 75.0)
STERNUM = (0.0, -103.0, 14.0, 5.0)
RIGHT_LUNG = (-68.0, 5.0, 55.0, 85.0)
LEFT_LUNG = (70.0, 5.0, 52.0, 83.0)
LUNG_APEX_Z, LUNG_BASE_Z = 90.0, -90.0  # mm; the lungs are 180 mm high
RIGHT_DOME_Z, LEFT_DOME_Z = -55.0, -65.0  # top of each diaphragm dome
HEART = (25.0, -30.0, -30.0, 60.0, 48.0, 55.0)  # centre x, y, z and semi-axes, mm
VERTEBRA = (0.0, 72.0, 17.0)  # centre x, y and radius of the vertebral body
SPINAL_CANAL = (0.0, 97.0, 8.0)
TUMOR_CENTRE_MM = (0.0, 20.0, -78.0)  # z, y, x: right lung, mid height, lateral and posterior
TUMOR_LOBULE_DIRECTIONS = ((0.3, 0.2, -1.0), (0.6, -0.8, 0.3), (-0.7, 0.5, 0.6),
                           (-0.2, -0.9, -0.6), (0.9, 0.4, 0.4), (-0.5, 0.3, -0.8))
HILA_MM = ((5.0, 0.0, -28.0), (5.0, 0.0, 32.0))  # z, y, x of the right and left hilum
# Main vessel directions (z, y, x) leaving the right hilum; the left ones are mirrored in x.
VESSEL_ROOTS = ((1.0, 0.0, -0.5), (0.1, 0.0, -1.0), (-1.0, 0.2, -0.5), (-0.4, 0.8, -0.4),
                (0.0, -0.8, -0.5), (0.6, -0.5, -0.6), (-0.6, -0.5, -0.6), (0.5, 0.6, -0.6))
VESSEL_LEVELS, VESSEL_ROOT_RADIUS_MM, VESSEL_ROOT_LENGTH_MM = 8, 5.0, 28.0


def _require(ok: bool, name: str, expected: str, found: object) -> None:
    """Raise ValueError naming the field, the expected and the found value, unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}: expected {expected}, found {found!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class PhantomSpec:
    """Grid, tumor size, noise and seed of a phantom; checks itself when built."""

    rows: int = 256
    columns: int = 256
    slices: int = 80
    pixel_spacing_mm: float = 1.5
    slice_spacing_mm: float = 2.5
    tumor_diameter_mm: float = 30.0
    noise_hu: float = 12.0
    seed: int = 0
    # mean tumor density: solid about 30 HU, part-solid lower. Left out of the repr, which
    # feeds the UIDs of written series, so that series written before it existed keep theirs.
    tumor_hu: float = field(default=HU_TUMOR, repr=False)
    # width of a ground-glass rim around the tumor, outside its mask (0: none); left out of the
    # repr for the same reason.
    halo_mm: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        for name in ("rows", "columns"):
            value = getattr(self, name)
            _require(_is_int(value) and 64 <= value <= 2048, name, "an int in 64..2048", value)
        _require(_is_int(self.slices) and 8 <= self.slices <= 2000, "slices",
                 "an int in 8..2000", self.slices)
        for name in ("pixel_spacing_mm", "slice_spacing_mm"):
            value = getattr(self, name)
            _require(_is_positive(value) and value <= 20, name, "a spacing in (0, 20] mm", value)
        d = self.tumor_diameter_mm
        _require(_is_positive(d) and 5 <= d <= 80, "tumor_diameter_mm", "5..80 mm", d)
        _require(_is_positive(self.noise_hu) or self.noise_hu == 0, "noise_hu",
                 "a finite value >= 0 HU", self.noise_hu)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        _require(isinstance(self.tumor_hu, (int, float)) and -700 <= self.tumor_hu <= 200,
                 "tumor_hu", "a density in -700..200 HU", self.tumor_hu)
        _require(isinstance(self.halo_mm, (int, float)) and 0 <= self.halo_mm <= 20,
                 "halo_mm", "a width in 0..20 mm", self.halo_mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.slices, self.rows, self.columns)

    def identity(self) -> str:
        """Text that differs for every different phantom (for UIDs)."""
        extra = "" if self.tumor_hu == HU_TUMOR else f", tumor_hu={self.tumor_hu!r}"
        extra += f", halo_mm={self.halo_mm!r}" if self.halo_mm else ""
        return repr(self) + extra


@dataclass(frozen=True)
class ChestPhantom:
    """The phantom's HU volume (z-y-x) with its tumor and lung masks; checks itself."""

    spec: PhantomSpec
    hu: np.ndarray
    tumor_mask: np.ndarray
    lung_mask: np.ndarray
    spacing_mm: tuple[float, float, float]
    tumor_centre_voxel: tuple[int, int, int]
    tumor_volume_mm3: float

    def __post_init__(self) -> None:
        _require(isinstance(self.spec, PhantomSpec), "spec", "a PhantomSpec", type(self.spec))
        shape = self.spec.shape
        for name, dtype in (("hu", np.int16), ("tumor_mask", bool), ("lung_mask", bool)):
            array = getattr(self, name)
            _require(isinstance(array, np.ndarray), name, "a numpy array", type(array))
            _require(array.shape == shape, f"{name}.shape", shape, array.shape)
            _require(array.dtype == dtype, f"{name}.dtype", np.dtype(dtype).name, array.dtype)
        self._check_geometry(shape)

    def _check_geometry(self, shape: tuple[int, int, int]) -> None:
        spacing = (self.spec.slice_spacing_mm, self.spec.pixel_spacing_mm,
                   self.spec.pixel_spacing_mm)
        _require(tuple(self.spacing_mm) == spacing, "spacing_mm", spacing, self.spacing_mm)
        centre = tuple(self.tumor_centre_voxel)
        inside = len(centre) == 3 and all(0 <= c < n for c, n in zip(centre, shape))
        _require(inside, "tumor_centre_voxel", f"a voxel index within {shape}", centre)
        _require(bool(self.tumor_mask[centre]), "tumor_centre_voxel", "a tumor voxel", centre)
        _require(not np.any(self.tumor_mask & ~self.lung_mask), "tumor_mask",
                 "a tumor inside lung_mask", "tumor voxels outside the lungs")
        volume = float(np.count_nonzero(self.tumor_mask)) * math.prod(spacing)
        _require(math.isclose(self.tumor_volume_mm3, volume, rel_tol=1e-9), "tumor_volume_mm3",
                 volume, self.tumor_volume_mm3)


def grid_axes_mm(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient coordinates (z, y, x) in mm of the voxel centres along each axis."""
    z = ((spec.slices - 1) / 2 - np.arange(spec.slices)) * spec.slice_spacing_mm
    y = (np.arange(spec.rows) - (spec.rows - 1) / 2) * spec.pixel_spacing_mm
    x = (np.arange(spec.columns) - (spec.columns - 1) / 2) * spec.pixel_spacing_mm
    return z, y, x


def make_chest_phantom(spec: PhantomSpec = PhantomSpec()) -> ChestPhantom:
    """Build the phantom that ``spec`` describes; the same spec always gives the same arrays."""
    z, y, x = grid_axes_mm(spec)
    centre = _tumor_centre_voxel(spec, z, y, x)
    rng = np.random.default_rng(spec.seed)
    hu = _chest_wall_and_mediastinum(spec, z, y, x)
    lung = _lungs(z, y, x)
    hu[lung] = HU_LUNG
    hu[_vessels(rng, spec, z, y, x) & lung] = HU_VESSEL
    tumor = _tumor(spec, centre, z, y, x) & lung
    if spec.halo_mm > 0:
        hu[_halo(spec, centre, z, y, x, lung, tumor)] = HU_GROUND_GLASS
    hu[tumor] = spec.tumor_hu
    if spec.noise_hu > 0:
        hu += rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(spec.noise_hu)
    hu = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    spacing = (spec.slice_spacing_mm, spec.pixel_spacing_mm, spec.pixel_spacing_mm)
    volume = float(np.count_nonzero(tumor)) * math.prod(spacing)
    return ChestPhantom(spec, hu, tumor, lung, spacing, centre, volume)


def ground_glass_halo_mask(spec: PhantomSpec) -> np.ndarray:
    """Where ``make_chest_phantom`` paints the ground-glass halo: the tumor grown by
    ``spec.halo_mm``, in the lung, outside the tumor (empty without a halo)."""
    z, y, x = grid_axes_mm(spec)
    if spec.halo_mm <= 0:
        return np.zeros(spec.shape, dtype=bool)
    centre = _tumor_centre_voxel(spec, z, y, x)
    lung = _lungs(z, y, x)
    return _halo(spec, centre, z, y, x, lung, _tumor(spec, centre, z, y, x) & lung)


def _halo(spec: PhantomSpec, centre, z, y, x, lung: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """The ground-glass rim: the tumor grown by ``spec.halo_mm``, in the lung, outside it."""
    return _tumor(spec, centre, z, y, x, grow_mm=spec.halo_mm) & lung & ~tumor


def _ellipse(y: np.ndarray, x: np.ndarray, e: tuple[float, float, float, float]) -> np.ndarray:
    """Normalised squared radius of the in-plane ellipse ``e``: <= 1 inside, 2D (rows, cols)."""
    cx, cy, ax, ay = e
    return ((x[None, :] - cx) / ax) ** 2 + ((y[:, None] - cy) / ay) ** 2


def _z_slab(z: np.ndarray, low: float, high: float) -> slice:
    """The contiguous slice indices whose z lies in [low, high] (z decreases with the index)."""
    inside = np.nonzero((z >= low) & (z <= high))[0]
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def _chest_wall_and_mediastinum(spec, z, y, x) -> np.ndarray:
    """Float32 HU volume of everything except lungs, vessels and tumor."""
    hu = np.broadcast_to(_axial_template(y, x), spec.shape).astype(np.float32)
    _paint_spine_discs(hu, z, y, x)
    _paint_liver(hu, z, y, x)
    _paint_ribs(hu, z, y, x)
    fat = _ellipse(y, x, MEDIASTINAL_FAT) <= 1
    hu[_z_slab(z, LEFT_DOME_Z, LUNG_APEX_Z)][:, fat] = HU_MEDIASTINAL_FAT
    hu[_heart(z, y, x)] = HU_BLOOD
    _paint_aorta(hu, z, y, x)
    return hu


def _axial_template(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The slice-invariant part: air, fat, muscle, cavity, sternum and vertebra."""
    image = np.full((y.size, x.size), HU_AIR, dtype=np.float32)
    image[_ellipse(y, x, BODY) <= 1] = HU_FAT
    image[_ellipse(y, x, MUSCLE) <= 1] = HU_MUSCLE
    image[_ellipse(y, x, THORACIC_CAVITY) <= 1] = HU_SOFT_TISSUE
    image[_ellipse(y, x, STERNUM) <= 1] = HU_CORTICAL_BONE - 300
    _paint_vertebra(image, y, x)
    return image


def _paint_vertebra(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """Vertebral body (cortex and cancellous bone), arch, spinous process and canal."""
    bx, by, br = VERTEBRA
    body = np.hypot(x[None, :] - bx, y[:, None] - by)
    image[body <= br] = HU_CORTICAL_BONE
    image[body <= br - 2.5] = HU_CANCELLOUS_BONE
    cx, cy, cr = SPINAL_CANAL
    canal = np.hypot(x[None, :] - cx, y[:, None] - cy)
    image[canal <= cr + 5] = HU_CORTICAL_BONE - 100
    spinous = (np.abs(x[None, :] - cx) <= 4) & (y[:, None] > cy) & (y[:, None] <= cy + 15)
    image[spinous] = HU_CORTICAL_BONE - 100
    image[canal <= cr] = HU_CSF


def _paint_spine_discs(hu: np.ndarray, z, y, x) -> None:
    """Intervertebral discs: every 28 mm of z, 5 mm of disc replaces the vertebral body."""
    bx, by, br = VERTEBRA
    body = np.hypot(x[None, :] - bx, y[:, None] - by) <= br
    for k in np.nonzero(np.mod(z, 28.0) < 5.0)[0]:
        hu[k][body] = HU_DISC


def _paint_liver(hu: np.ndarray, z, y, x) -> None:
    """Liver under the right diaphragm (the lungs' recesses are painted over it later)."""
    region = (_ellipse(y, x, THORACIC_CAVITY) <= 1) & (x[None, :] < 40)
    region &= _ellipse(y, x, (0.0, 72.0, 30.0, 30.0)) > 1  # leave the spine alone
    hu[_z_slab(z, -np.inf, RIGHT_DOME_Z + 5)][:, region] = HU_LIVER


def _paint_ribs(hu: np.ndarray, z, y, x) -> None:
    """Oblique rib arcs in the ring between thoracic cavity and chest-wall muscle."""
    ring = (_ellipse(y, x, RIB_RING) <= 1) & (_ellipse(y, x, THORACIC_CAVITY) > 1)
    ring &= ~((np.abs(x)[None, :] < 30) & (y[:, None] < 0))  # costal cartilage gap at front
    ring &= ~((np.abs(x)[None, :] < 30) & (y[:, None] > 0))  # spine at the back
    rows, cols = np.nonzero(ring)
    slab = _z_slab(z, LUNG_BASE_Z - 30, LUNG_APEX_Z + 5)
    phase = z[slab, None] + 0.35 * y[rows][None, :]  # ribs descend towards the front
    rib = np.mod(phase, 24.0) < 9.0
    block = hu[slab]
    block[:, rows, cols] = np.where(rib, HU_RIB, block[:, rows, cols])


def _heart(z, y, x) -> np.ndarray:
    """Boolean 3D ellipsoid of the heart, left of the midline and low in the chest."""
    cx, cy, cz, ax, ay, az = HEART
    heart = np.zeros((z.size, y.size, x.size), dtype=bool)
    slab = _z_slab(z, cz - az, cz + az)
    zz = ((z[slab] - cz) / az)[:, None, None] ** 2
    heart[slab] = (zz + _ellipse(y, x, (cx, cy, ax, ay))[None]) <= 1
    return heart


def _paint_aorta(hu: np.ndarray, z, y, x) -> None:
    """Descending aorta beside the spine, ascending aorta above the heart and the arch."""
    descending = np.hypot(x[None, :] - 22, y[:, None] - 62) <= 12
    hu[_z_slab(z, LUNG_BASE_Z, 60.0)][:, descending] = HU_BLOOD
    ascending = np.hypot(x[None, :] - 8, y[:, None] + 25) <= 15
    hu[_z_slab(z, 15.0, 60.0)][:, ascending] = HU_BLOOD
    arch = _capsule_2d(y, x, (-25.0, 8.0), (62.0, 22.0)) <= 12
    hu[_z_slab(z, 50.0, 66.0)][:, arch] = HU_BLOOD


def _capsule_2d(y, x, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """In-plane distance (mm) to the segment from ``a`` to ``b``, both given as (y, x)."""
    dy, dx = b[0] - a[0], b[1] - a[1]
    py, px = y[:, None] - a[0], x[None, :] - a[1]
    t = np.clip((py * dy + px * dx) / (dy * dy + dx * dx), 0.0, 1.0)
    return np.hypot(py - t * dy, px - t * dx)


def _lungs(z, y, x) -> np.ndarray:
    """Both lungs: ellipses that taper towards the apex, cut below by diaphragm domes."""
    scale2 = np.clip((LUNG_APEX_Z - z) / (0.3 * (LUNG_APEX_Z - LUNG_BASE_Z)), 0.0, 1.0)
    keep_out = (_ellipse(y, x, THORACIC_CAVITY) > 1) | (_ellipse(y, x, MEDIASTINUM) <= 1)
    lungs = np.zeros((z.size, y.size, x.size), dtype=bool)
    for ellipse, dome_top in ((RIGHT_LUNG, RIGHT_DOME_Z), (LEFT_LUNG, LEFT_DOME_Z)):
        q = _ellipse(y, x, ellipse)
        dome = LUNG_BASE_Z + (dome_top - LUNG_BASE_Z) * np.clip(1.0 - q, 0.0, 1.0)
        lungs |= (q[None] <= scale2[:, None, None]) & (z[:, None, None] > dome[None])
    lungs &= ~keep_out[None]
    lungs &= ~_heart(z, y, x)
    lungs &= ~(np.hypot(x[None, :] - 22, y[:, None] - 62) <= 14)[None]  # descending aorta
    return lungs


def _vessel_tree(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments (start, end, radius) of a binary tree from each hilum, in mm (z, y, x)."""
    roots = np.asarray(VESSEL_ROOTS, dtype=float)
    directions = np.concatenate([roots, roots * [1.0, 1.0, -1.0]])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    starts = np.repeat(np.asarray(HILA_MM, dtype=float), len(roots), axis=0)
    length, radius = VESSEL_ROOT_LENGTH_MM, VESSEL_ROOT_RADIUS_MM
    segments: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(VESSEL_LEVELS):
        lengths = length * rng.uniform(0.8, 1.2, size=len(starts))
        ends = starts + directions * lengths[:, None]
        segments.append((starts, ends, np.full(len(starts), radius)))
        starts = np.repeat(ends, 2, axis=0)
        directions = _branch_directions(rng, np.repeat(directions, 2, axis=0))
        length, radius = length * 0.75, radius * 0.72
    return tuple(np.concatenate(parts) for parts in zip(*segments))  # type: ignore[return-value]


def _branch_directions(rng: np.random.Generator, parents: np.ndarray) -> np.ndarray:
    """Children turn 20-40 degrees away from their parent, pairs to opposite sides."""
    side = rng.normal(size=parents.shape)
    side -= np.sum(side * parents, axis=1, keepdims=True) * parents
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    side[1::2] = -side[::2]
    angle = np.radians(rng.uniform(20.0, 40.0, size=len(parents)))[:, None]
    return np.cos(angle) * parents + np.sin(angle) * side


def _vessels(rng: np.random.Generator, spec: PhantomSpec, z, y, x) -> np.ndarray:
    """Boolean volume of the vessel tree, rasterised segment by segment in small boxes."""
    mask = np.zeros(spec.shape, dtype=bool)
    for start, end, radius in zip(*_vessel_tree(rng)):
        box = _box(spec, np.minimum(start, end) - radius, np.maximum(start, end) + radius)
        if box is not None:
            mask[box] |= _segment_distance(z[box[0]], y[box[1]], x[box[2]], start, end) <= radius
    return mask


def _box(spec: PhantomSpec, low_mm: np.ndarray, high_mm: np.ndarray):
    """Index slices (z, y, x) of the voxels in the mm box [low, high]; None if it is empty."""
    ps, ss = spec.pixel_spacing_mm, spec.slice_spacing_mm
    k0 = math.ceil((spec.slices - 1) / 2 - high_mm[0] / ss)
    k1 = math.floor((spec.slices - 1) / 2 - low_mm[0] / ss)
    r0 = math.ceil(low_mm[1] / ps + (spec.rows - 1) / 2)
    r1 = math.floor(high_mm[1] / ps + (spec.rows - 1) / 2)
    c0 = math.ceil(low_mm[2] / ps + (spec.columns - 1) / 2)
    c1 = math.floor(high_mm[2] / ps + (spec.columns - 1) / 2)
    box = (slice(max(k0, 0), min(k1 + 1, spec.slices)), slice(max(r0, 0), min(r1 + 1, spec.rows)),
           slice(max(c0, 0), min(c1 + 1, spec.columns)))
    return None if any(s.start >= s.stop for s in box) else box


def _segment_distance(z, y, x, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (mm) of each grid point (z, y, x axes given) to the segment start-end."""
    d = end - start
    pz, py, px = (z[:, None, None] - start[0], y[None, :, None] - start[1],
                  x[None, None, :] - start[2])
    length2 = float(d @ d)
    t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    return np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)


def _tumor_lobes(diameter: float) -> list[tuple[np.ndarray, float]]:
    """(offset mm (z, y, x), radius mm) of the main sphere and its lobules; extent = diameter."""
    lobes = [(np.zeros(3), 0.44 * diameter)]
    for direction in TUMOR_LOBULE_DIRECTIONS:
        unit = np.asarray(direction) / np.linalg.norm(direction)
        lobes.append((unit * 0.3 * diameter, 0.2 * diameter))
    return lobes


def _tumor_centre_voxel(spec: PhantomSpec, z, y, x) -> tuple[int, int, int]:
    """The voxel nearest TUMOR_CENTRE_MM; the whole tumor must fit in the grid."""
    axes = (z, y, x)
    centre = tuple(int(np.argmin(np.abs(axis - c))) for axis, c in zip(axes, TUMOR_CENTRE_MM))
    origin = np.array([axis[i] for axis, i in zip(axes, centre)])
    low, high = origin - 0.5 * spec.tumor_diameter_mm, origin + 0.5 * spec.tumor_diameter_mm
    fits = all(axis.min() <= lo and hi <= axis.max() for axis, lo, hi in zip(axes, low, high))
    _require(fits, "spec (rows/columns/slices x spacing)",
             f"a field of view holding the tumor box {low.tolist()}..{high.tolist()} mm (z, y, x)",
             f"z {z.min():.1f}..{z.max():.1f}, y {y.min():.1f}..{y.max():.1f}, "
             f"x {x.min():.1f}..{x.max():.1f} mm")
    return centre  # type: ignore[return-value]


def _tumor(spec: PhantomSpec, centre: tuple[int, int, int], z, y, x, grow_mm: float = 0.0
           ) -> np.ndarray:
    """Boolean volume of the lobulated tumor around the centre voxel, each lobe's radius grown
    by ``grow_mm`` (the ground-glass halo's outline)."""
    origin = np.array([z[centre[0]], y[centre[1]], x[centre[2]]])
    half = 0.5 * spec.tumor_diameter_mm + grow_mm
    mask = np.zeros(spec.shape, dtype=bool)
    box = _box(spec, origin - half, origin + half)
    zz, yy, xx = z[box[0]], y[box[1]], x[box[2]]
    for offset, radius in _tumor_lobes(spec.tumor_diameter_mm):
        c = origin + offset
        mask[box] |= _segment_distance(zz, yy, xx, c, c) <= radius + grow_mm
    return mask
