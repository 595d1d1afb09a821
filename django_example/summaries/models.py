from django.db import models


class Run(models.Model):
    """One summarize request, written in the request's transaction (ATOMIC_REQUESTS)."""

    mode = models.CharField(max_length=16)
    documents = models.PositiveIntegerField()
    failed = models.PositiveIntegerField(default=0)
    elapsed_s = models.FloatField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.mode}: {self.documents} documents in {self.elapsed_s:.2f} s"
