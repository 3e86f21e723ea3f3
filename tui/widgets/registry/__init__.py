"""Widgets of the models screen: models, versions, a version's card, two side by side."""
