"""Wan 2.2 generation parameters: presets, provider defaults and validation.

One place decides what a valid request is, so the API, the web form and `submit_batch` agree.
"""

from dataclasses import dataclass

# Frame counts Wan accepts are 4n+1; fal's A14B endpoint takes 17..161.
MIN_FRAMES, MAX_FRAMES = 17, 161
RESOLUTIONS = {"480p": 480, "580p": 580, "720p": 720}
MAX_PROMPT_CHARS = 2000

PRESETS = {
    "draft": {"num_frames": 49, "fps": 16, "resolution": "480p"},
    "standard": {"num_frames": 81, "fps": 16, "resolution": "480p"},
    "hd": {"num_frames": 81, "fps": 16, "resolution": "720p"},
}
DEFAULT_PRESET = "standard"

# fal runs the full 27-step A14B pipeline; the vast image bakes in the lightx2v 4-step LoRA, which wants CFG 1.
PROVIDER_DEFAULTS = {
    "fal": {"steps": 27, "cfg": 3.5},
    "vastai": {"steps": 4, "cfg": 1.0},
}

PARAM_NAMES = ("num_frames", "fps", "resolution", "width", "height", "steps", "cfg", "seed", "negative_prompt")


@dataclass(frozen=True)
class ParamError:
    field: str
    message: str


def _int_in(value, name, low, high, errors, *, multiple_of=None):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        errors.append(ParamError(name, f"must be an integer between {low} and {high}"))
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.append(ParamError(name, f"must be an integer between {low} and {high}"))
        return None
    if not low <= number <= high:
        errors.append(ParamError(name, f"must be between {low} and {high}, got {number}"))
        return None
    if multiple_of and number % multiple_of:
        errors.append(ParamError(name, f"must be a multiple of {multiple_of}, got {number}"))
        return None
    return number


def _float_in(value, name, low, high, errors):
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors.append(ParamError(name, f"must be a number between {low} and {high}"))
        return None
    if isinstance(value, bool) or not low <= number <= high:
        errors.append(ParamError(name, f"must be between {low} and {high}, got {value}"))
        return None
    return number


def resolve_params(*, provider: str, preset: str | None, overrides: dict) -> tuple[dict, list[ParamError]]:
    """Merges preset, provider defaults and the user's overrides; returns (params, errors).

    `seed` and `negative_prompt` stay in the result only when given: they are per-item values
    with batch-wide defaults.
    """
    errors: list[ParamError] = []
    preset = preset or DEFAULT_PRESET
    if not isinstance(preset, str) or preset not in PRESETS:
        errors.append(ParamError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"))
        preset = DEFAULT_PRESET
    if not isinstance(overrides, dict):
        return {}, [ParamError("params", "must be a JSON object")]
    unknown = sorted(set(overrides) - set(PARAM_NAMES))
    for name in unknown:
        errors.append(ParamError(f"params.{name}", f"unknown parameter; known: {', '.join(PARAM_NAMES)}"))

    raw = {**PRESETS[preset], **PROVIDER_DEFAULTS.get(provider, PROVIDER_DEFAULTS["fal"]), **overrides}
    params = {}
    frames = _int_in(raw["num_frames"], "params.num_frames", MIN_FRAMES, MAX_FRAMES, errors)
    if frames is not None and (frames - 1) % 4:
        errors.append(ParamError("params.num_frames", f"must be 4n+1 (e.g. 49, 81, 121), got {frames}"))
    params["num_frames"] = frames
    params["fps"] = _int_in(raw["fps"], "params.fps", 4, 60, errors)
    if not isinstance(raw["resolution"], str) or raw["resolution"] not in RESOLUTIONS:
        errors.append(ParamError("params.resolution", f"must be one of {', '.join(RESOLUTIONS)}"))
    params["resolution"] = raw["resolution"]
    params["steps"] = _int_in(raw["steps"], "params.steps", 2, 40, errors)
    params["cfg"] = _float_in(raw["cfg"], "params.cfg", 1.0, 10.0, errors)
    for side in ("width", "height"):
        if raw.get(side) is not None:
            params[side] = _int_in(raw[side], f"params.{side}", 256, 1280, errors, multiple_of=16)
    if ("width" in params) != ("height" in params):
        errors.append(ParamError("params.width", "give both width and height, or neither"))
    if raw.get("seed") is not None:
        params["seed"] = validate_seed(raw["seed"], "params.seed", errors)
    if raw.get("negative_prompt") is not None:
        params["negative_prompt"] = validate_text(raw["negative_prompt"], "params.negative_prompt", errors,
                                                  required=False)
    return params, errors


def validate_seed(value, field: str, errors: list[ParamError]):
    return _int_in(value, field, 0, 2**32 - 1, errors)


def validate_text(value, field: str, errors: list[ParamError], *, required: bool) -> str:
    if not isinstance(value, str):
        errors.append(ParamError(field, "must be text"))
        return ""
    value = value.strip()
    if required and not value:
        errors.append(ParamError(field, "must not be empty"))
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL, and no prompt means one.
        errors.append(ParamError(field, "must not contain NUL characters"))
    if len(value) > MAX_PROMPT_CHARS:
        errors.append(ParamError(field, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"))
    return value


def video_size(params: dict, image_width: int, image_height: int) -> tuple[int, int]:
    """Output size: the user's width/height, or the image's aspect at the resolution's short side."""
    if params.get("width") and params.get("height"):
        return params["width"], params["height"]
    short = RESOLUTIONS[params["resolution"]]
    scale = short / min(image_width, image_height)

    def snap(value: float) -> int:
        return max(256, min(1280, int(round(value / 16)) * 16))

    return snap(image_width * scale), snap(image_height * scale)


def video_seconds(params: dict) -> float:
    return params["num_frames"] / params["fps"]
