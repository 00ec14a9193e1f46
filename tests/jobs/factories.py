"""Small builders for batches and jobs, going through the same services the API uses."""

from jobs import services
from jobs.intake import UploadedFile, build_batch
from providers.simulators.media import make_image


def make_batch(owner, *, provider="fal", count=1, prompt="a slow pan", params=None, **kwargs):
    files = [UploadedFile(f"img{i}.png", make_image(color=(i * 40 % 256, 100, 50))) for i in range(count)]
    spec = build_batch(provider=provider, prompt=prompt, files=files, params=params or {"num_frames": 17}, **kwargs)
    return services.batch_create(owner=owner, spec=spec)
