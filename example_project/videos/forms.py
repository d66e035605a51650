"""The "new video" form: plain Django fields, with the app's own validation mapped onto them."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

MODELS = [
    ("gen4_turbo", "Gen-4 Turbo (fast)"),
    ("gen4", "Gen-4"),
    ("gen3a_turbo", "Gen-3 Alpha Turbo"),
]
RATIOS = [
    ("1280:720", "Landscape 16:9 (1280 x 720)"),
    ("720:1280", "Portrait 9:16 (720 x 1280)"),
    ("960:960", "Square 1:1 (960 x 960)"),
    ("1584:672", "Cinema 21:9 (1584 x 672)"),
]
SECONDS = [(5, "5 seconds"), (10, "10 seconds")]


class NewVideoForm(forms.Form):
    # Not required here: generate() knows the rule (a prompt, an image, or both) and says so.
    prompt = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "A red fox running through snow"}),
        help_text="Describe the scene and the camera. Up to 1000 characters.",
    )
    image = forms.URLField(
        label="Image URL",
        required=False,
        assume_scheme="https",
        help_text="Optional first frame (an http(s) link to a picture).",
    )
    model = forms.ChoiceField(choices=MODELS, initial="gen4_turbo")
    ratio = forms.ChoiceField(choices=RATIOS, initial="1280:720")
    seconds = forms.TypedChoiceField(choices=SECONDS, coerce=int, initial=5)

    def generate_kwargs(self) -> dict[str, object]:
        """The keyword arguments of ``RunwayTask.objects.generate()`` (after is_valid())."""
        data = self.cleaned_data
        return {
            "prompt": data["prompt"] or None,
            "image": data["image"] or None,
            "model": data["model"],
            "ratio": data["ratio"],
            "seconds": data["seconds"],
        }

    def add_task_errors(self, error: ValidationError) -> None:
        """Show each message of generate()'s ValidationError next to the field it is about."""
        by_field = error.message_dict if hasattr(error, "error_dict") else {None: error.messages}
        for name, messages in by_field.items():
            field = name if name in self.fields else None
            for message in messages:
                self.add_error(field, message)
