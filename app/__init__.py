"""The app layer: console scripts, the pipeline runner and the demo. It sits above the stages
(extract, train, evaluate) and the core (``thinkjepa``); nothing below imports it."""
