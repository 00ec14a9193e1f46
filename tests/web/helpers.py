"""Small builders and readers shared by the web tests."""

import html
import io
import re
import zipfile
from html.parser import HTMLParser

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from jobs.models import Job
from providers.simulators.media import make_image, make_video


def image_file(name: str = "cat.png", **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image(**kwargs), content_type="image/png")


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def form_data(**fields) -> dict:
    """A valid new-batch form; tests override what they are about."""
    data = {"provider": "fal", "pairing": "prompt", "prompt": "the camera slowly orbits", "preset": "standard",
            "num_frames": "17", "action": "create"}
    data.update(fields)
    data.setdefault("images", [image_file("a.png"), image_file("b.png", color=(1, 2, 3))])
    return data


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _ShownText(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hidden = []  # per open element: is it (or an ancestor) hidden?
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID_ELEMENTS:
            self.hidden.append(any(name == "hidden" for name, _ in attrs) or bool(self.hidden and self.hidden[-1]))

    def handle_endtag(self, tag):
        if tag not in VOID_ELEMENTS and self.hidden:
            self.hidden.pop()

    def handle_data(self, data):
        if not (self.hidden and self.hidden[-1]):
            self.parts.append(data)


def shown_text(fragment: str) -> str:
    """The text of a fragment without what its `hidden` elements hold (which the page script may show later)."""
    parser = _ShownText()
    parser.feed(fragment)
    return " ".join(" ".join(parser.parts).split())


def errors_next_to(response, anchor: str) -> str:
    """The text of the error container that the page shows next to one field."""
    page = response.content.decode()
    match = re.search(rf'<div class="field-errors" id="err-{re.escape(anchor)}" data-swap>(.*?)</div>', page, re.S)
    assert match, f"the page has no error container for {anchor}"
    return text_of(match.group(1))


def finish_job(job: Job, *, status=Job.Status.SUCCEEDED, cost="0.0123", error="") -> Job:
    """Puts a job where a worker would have left it, with a real stored video when it succeeded."""
    fields = {"status": status, "finished_at": timezone.now(), "attempts": 1}
    if status == Job.Status.SUCCEEDED:
        fields["progress"] = 1.0
        fields["output_video"] = default_storage.save(f"outputs/{job.uuid}.mp4", ContentFile(
            make_video(make_image(), frames=17, fps=16, width=320, height=240)))
        fields["poster"] = default_storage.save(f"posters/{job.uuid}.jpg", ContentFile(make_image(fmt="JPEG")))
        fields["cost_usd"] = cost
    else:
        fields.update(error_code="generation_failed", error_message=error or "the GPU ran out of memory")
    Job.objects.filter(pk=job.pk).update(**fields)
    job.refresh_from_db()
    return job
