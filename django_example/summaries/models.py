from django.db import models


class Run(models.Model):
    """One summarize request: written before its LLM calls, completed after them."""

    mode = models.CharField(max_length=16)
    documents = models.PositiveIntegerField()
    failed = models.PositiveIntegerField(default=0)
    #: None until the run is finished.
    elapsed_s = models.FloatField(null=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True)

    def __str__(self) -> str:
        if self.finished is None:
            return f"{self.mode}: {self.documents} documents, running"
        return f"{self.mode}: {self.documents} documents in {self.elapsed_s:.2f} s"


class Outcome(models.Model):
    """One document's result in a run, written as soon as its LLM call is over."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="outcomes")
    index = models.PositiveIntegerField()
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    total_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=["run", "index"], name="one_outcome_per_document"),
        )

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.index}: {'failed' if self.error else 'ok'}"
