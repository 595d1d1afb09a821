"""Sample document sets for the page."""

from __future__ import annotations

_TOPICS = [
    "solar panels on school roofs",
    "a new cycle lane on the high street",
    "the library's extended opening hours",
    "a heat wave and the city's cooling centres",
    "the football club's youth academy",
    "a delayed tram extension",
    "the river clean-up volunteers",
    "a bakery that opened at dawn",
    "the council's budget vote",
    "a museum's dinosaur exhibition",
    "rising rents near the university",
    "the marathon's new route",
    "a community garden on a car park",
    "late trains on the northern line",
    "a power cut in the old town",
    "the hospital's new wing",
    "a jazz festival in the park",
    "recycling rules that change in May",
    "a start-up hiring fifty engineers",
    "the first snow of the winter",
]

SAMPLES = {
    "news": [
        f"Local news, item {i + 1}: {topic}. Residents, officials and local businesses "
        f"spoke about {topic} this week, and a decision is expected next month."
        for i, topic in enumerate(_TOPICS)
    ],
    "short": [f"Note {i + 1}: remember {topic}." for i, topic in enumerate(_TOPICS[:5])],
}
