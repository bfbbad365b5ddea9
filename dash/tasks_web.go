package dash
