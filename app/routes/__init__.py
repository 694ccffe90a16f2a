"""HTTP routes, one router per feature: parse the request, call one service or store function,
render a page or a fragment."""
